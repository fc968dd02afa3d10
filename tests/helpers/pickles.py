"""A hostile pickle, for the tests that prove drtool decodes Dify's embedding cache without running a pickle."""

from __future__ import annotations

import os
from pathlib import Path


class Exploit:
    """Pickles to `os.system("touch MARKER")`: an unpickler that executes it leaves the marker file behind."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))
