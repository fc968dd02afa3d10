"""No Docker engine runs in CI, so check the image the way we can: its structure, and its install steps run for real.

The COPY set is copied into a clean folder and the Dockerfile's own `pip install` line runs there in a new virtual
environment: if the image would miss a file or a dependency, this fails.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_image_shape() -> None:
    steps = instructions()
    base = next(rest for word, rest in steps if word == "FROM")
    assert re.fullmatch(r"python:3\.1[1-9]-slim-\w+", base), base
    apt = " ".join(rest for word, rest in steps if word == "RUN" and "apt-get install" in rest)
    client = re.search(r"postgresql-client-(\d+)", apt)
    assert client and int(client.group(1)) >= 17, "pg_dump must be at least as new as PostgreSQL 16 and 17 servers"
    users = [rest for word, rest in steps if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert ("ENTRYPOINT", '["drtool"]') in steps


def test_install_steps_build_a_working_drtool(tmp_path: Path) -> None:
    steps = instructions()
    context = tmp_path / "context"
    context.mkdir()
    for word, rest in steps:
        if word == "COPY":
            *sources, _dest = shlex.split(rest)
            for source in sources:
                src = REPO / source
                if src.is_dir():
                    shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy2(src, context / source)
    pip_lines = [rest for word, rest in steps if word == "RUN" and rest.startswith("pip install")]
    assert pip_lines == ["pip install --no-cache-dir ."]
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    env = {**os.environ, "PATH": f"{env_dir / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    for line in pip_lines:
        subprocess.run(shlex.split(line), cwd=context, env=env, check=True, capture_output=True, timeout=900)
    run = subprocess.run([str(env_dir / "bin" / "drtool"), "--help"], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "Exit codes" in run.stdout
    # The default install stays light: no torch.
    probe = subprocess.run([str(env_dir / "bin" / "python"), "-c", "import importlib.util as u; "
                            "print(u.find_spec('torch') is None)"], capture_output=True, text=True, env=env)
    assert probe.stdout.strip() == "True"
