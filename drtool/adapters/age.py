"""age encryption of snapshot artifacts through pyrage (the Rust `age` crate), streaming both ways.

The files are plain age files: `age -d -i key.txt db.dump.age > db.dump` restores without drtool. There is no
default passphrase and drtool never stores a private key: recipients encrypt, identity files decrypt.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import pyrage

from drtool.errors import AuthError, ConfigError, UsageError, VerificationFailed


def parse_recipients(spec: Sequence[str]) -> list[Any]:
    """`age1…` / `ssh-ed25519 …` recipients, or paths of files holding one per line (# comments allowed).

    Items stay whole: a recipients-file path may hold a comma (snapshot.encrypt_to is a list setting)."""
    items: list[str] = []
    for part in filter(None, (p.strip() for p in spec)):
        if part.startswith(("age1", "ssh-")):
            items.append(part)
            continue
        path = Path(part).expanduser()
        if not path.is_file():
            raise ConfigError(f"age recipient {part!r} is neither a recipient (age1…) nor a readable file",
                              hint="pass --encrypt-to age1… or the path of a recipients file")
        items.extend(line.strip() for line in path.read_text().splitlines()
                     if line.strip() and not line.lstrip().startswith("#"))
    recipients: list[Any] = []
    for item in items:
        try:
            recipients.append(pyrage.ssh.Recipient.from_str(item) if item.startswith("ssh-")
                              else pyrage.x25519.Recipient.from_str(item))
        except pyrage.RecipientError:
            raise ConfigError(f"invalid age recipient {item[:12]}…",
                              hint="recipients look like age1… (from `age-keygen -y key.txt`)") from None
    if not recipients:
        raise ConfigError("no age recipient given", hint="pass --encrypt-to age1… or a recipients file")
    return recipients


def load_identities(path: str) -> list[Any]:
    """Private keys (AGE-SECRET-KEY-…) from an identity file as written by age-keygen."""
    file = Path(path).expanduser()
    try:
        lines = file.read_text().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read age identity file {path}: {exc.strerror}") from None
    identities: list[Any] = []
    for line in lines:
        line = line.strip()
        if line.startswith("AGE-SECRET-KEY-"):
            try:
                identities.append(pyrage.x25519.Identity.from_str(line))
            except pyrage.IdentityError:
                raise UsageError(f"age identity file {path} holds an invalid key") from None
    if not identities:
        raise UsageError(f"age identity file {path} holds no AGE-SECRET-KEY line",
                         hint="pass the file written by age-keygen")
    return identities


def encrypt_stream(source: IO[bytes], sink: Any, recipients: list[Any]) -> None:
    """Read `source` to its end, write age ciphertext into `sink` (pull model: e.g. pg_dump's stdout)."""
    pyrage.encrypt_io(source, sink, recipients)


def decrypt_stream(source: Any, sink: Any, identities: list[Any], *, what: str) -> None:
    try:
        pyrage.decrypt_io(source, sink, identities)
    except pyrage.DecryptError as exc:
        text = str(exc).lower()
        if "no matching keys" in text or "no identity" in text or "matching" in text:
            raise AuthError(f"{what}: none of the given age identities can decrypt it",
                            hint="pass the identity (private key) matching a recipient the snapshot was encrypted to"
                            ) from None
        raise AuthError(f"{what}: cannot be decrypted ({exc})",
                        hint="the file is corrupt or not an age file; run `drtool snapshots verify`") from None
    except OSError as exc:
        # The age stream's authentication failed part-way (pyrage reports it as an I/O error): the ciphertext
        # was modified or truncated after it was written. Other I/O errors are not ours to rename.
        if "decryption error" not in str(exc).lower():
            raise
        raise VerificationFailed(f"{what}: decryption failed: the encrypted file was modified or truncated "
                                 "(age authentication failed)",
                                 hint="run `drtool snapshots verify`; restore another snapshot") from None


class EncryptingWriter:
    """A push-model writer (write()/close()) that age-encrypts into `sink` through a pipe and a thread."""

    def __init__(self, sink: Any, recipients: list[Any]) -> None:
        read_fd, write_fd = os.pipe()
        self._reader = os.fdopen(read_fd, "rb")
        self._writer = os.fdopen(write_fd, "wb")
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(sink, recipients), daemon=True)
        self._thread.start()

    def _run(self, sink: Any, recipients: list[Any]) -> None:
        try:
            pyrage.encrypt_io(self._reader, sink, recipients)
        except BaseException as exc:  # handed to the writer's thread in close()
            self._error = exc
        finally:
            self._reader.close()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:
        if self._error:
            raise self._error
        self._writer.write(data)
        return len(data)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        if not self._writer.closed:
            self._writer.close()
        self._thread.join()
        if self._error:
            raise self._error
