"""Who made a snapshot: signing at `snapshot create`, and the check every reader runs before trusting one.

The cron host signs with `snapshot.signing_key_file` (or `snapshot.signing_key`); the restore host pins
`snapshot.trusted_keys`. With a trusted key configured, `snapshots verify`, `restore` and `drill` refuse (exit 4) a
snapshot that is unsigned, signed by another key, or whose SHA256SUMS changed since it was signed, before anything is
read from its manifest or copied. Without one they proceed, and say on every run that the snapshot is not
authenticated. `--expect-digest` pins one snapshot out of band (the digest `snapshot create` prints), which is also
the answer to a replayed, validly signed old snapshot. The statement and key formats are in drtool.core.signing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from drtool.adapters import s3 as s3a
from drtool.config import Settings
from drtool.core import manifest as mf
from drtool.core import signing
from drtool.errors import ConfigError, UsageError, VerificationFailed
from drtool.ops.snapshot.catalog import expected_sums
from drtool.redact import register_secret

log = logging.getLogger("drtool.snapshot")

_warned: set[str] = set()  # one warning per snapshot per process (drill checks the same snapshot three times)


@dataclass
class Authentication:
    """The outcome of `authenticate`: `sums` are the verified SHA256SUMS entries the caller checks artifacts with."""

    snapshot_id: str
    digest: str
    authenticated: bool
    key_id: str | None
    sums: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"authenticated": self.authenticated, "signed_by": self.key_id, "digest": self.digest}


# --- keys ----------------------------------------------------------------------------------------------------------

def signing_key(settings: Settings) -> Any | None:
    """The private key `snapshot create` signs with, or None when none is configured.

    The key text is registered as a secret before it is parsed, so no later message can print it."""
    snap = settings.snapshot
    if snap.signing_key_file:
        path = Path(snap.signing_key_file)
        try:
            data = path.read_bytes()
            mode = path.stat().st_mode
        except OSError as exc:
            raise ConfigError(f"cannot read snapshot.signing_key_file {path}: {exc.strerror}",
                              hint="create one with `drtool keys generate --out PATH`") from None
        for form in signing.secret_forms(data):
            register_secret(form)
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("signing key %s is readable by other users (mode %o): chmod 600 it", path,
                        stat.S_IMODE(mode))
        where = f"snapshot.signing_key_file {path}"
    elif snap.signing_key:
        data = snap.signing_key.encode()
        for form in signing.secret_forms(data):
            register_secret(form)
        where = "snapshot.signing_key"
    else:
        return None
    try:
        return signing.load_private(data)
    except signing.KeyFormatError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def trusted_keys(settings: Settings) -> list[signing.PublicKey]:
    """The pinned public keys: `drtool-ed25519:...` items, or files holding them (one per line, `#` comments)."""
    text = settings.snapshot.trusted_keys or ""
    keys: list[signing.PublicKey] = []
    for item in signing.split_key_list(text):
        if item.startswith(signing.PUBLIC_PREFIX):
            sources = [(item, "snapshot.trusted_keys")]
        else:
            try:
                content = Path(item).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                raise ConfigError(f"snapshot.trusted_keys: {item!r} is neither a public key ({signing.PUBLIC_PREFIX}"
                                  f"...) nor a readable file ({reason})",
                                  hint="`drtool keys public --key PRIVATE_KEY_FILE` prints the public key") from None
            sources = [(line, f"snapshot.trusted_keys file {item}") for line in signing.split_key_list(content)]
        for value, where in sources:
            try:
                keys.append(signing.parse_public(value))
            except signing.KeyFormatError as exc:
                raise ConfigError(f"{where}: {exc}") from None
    if text.strip() and not keys:
        raise ConfigError("snapshot.trusted_keys is set but names no key",
                          hint="`drtool keys public --key PRIVATE_KEY_FILE` prints the public key")
    return keys


def write_private_key(path: str | Path, key: Any) -> None:
    """Create `path` with mode 0600 holding `key` as PEM; refuses to replace an existing file."""
    target = Path(path)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        raise UsageError(f"{target} already exists; not replacing a key",
                         hint="choose another --out path, or remove the old key first if you mean to") from None
    except OSError as exc:
        raise UsageError(f"cannot create {target}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, signing.private_pem(key))
        os.fsync(fd)
    finally:
        os.close(fd)


# --- signing and checking -------------------------------------------------------------------------------------------

def sign_commit(key: Any | None, snapshot_id: str, sums_digest: str) -> dict[str, str] | None:
    """The signature record for the COMMITTED marker (None without a key)."""
    return None if key is None else signing.sign(key, snapshot_id, sums_digest)


def parse_expect_digest(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return signing.normalize_digest(text)
    except ValueError as exc:
        raise UsageError(f"--expect-digest: {exc}") from None


def authenticate(settings: Settings, dest: Any, info: Any, *, expect_digest: str | None = None) -> Authentication:
    """Check that `info` is the snapshot a trusted key signed (and the one --expect-digest names).

    Raises VerificationFailed (exit 4) when it is not; without a trusted key it warns and returns
    authenticated=False. Also re-reads meta.json: when it matches the verified SHA256SUMS, `info.meta` becomes that
    copy, so nothing later relies on the unchecked one `load` read (a mismatch is left to the callers' checks)."""
    trusted = trusted_keys(settings)
    expected = parse_expect_digest(expect_digest)
    sums = expected_sums(dest, info)  # SHA256SUMS as COMMITTED names it, or VerificationFailed
    digest = str(info.committed.get("sha256sums"))
    if expected is not None and digest != expected:
        raise VerificationFailed(f"snapshot {info.id} has digest {digest}, not the expected {expected}",
                                 hint="it is not the snapshot that was pinned; do not restore it")
    key_id: str | None = None
    if trusted:
        try:
            key = signing.check_signature(info.committed.get("signature"), info.id, digest, trusted)
        except signing.SignatureRejected as exc:
            raise VerificationFailed(
                f"snapshot {info.id} is not authenticated: {exc}",
                hint="it was not committed by a host holding a trusted signing key (snapshot.trusted_keys); "
                     "treat the snapshot bucket as compromised and restore a snapshot that verifies") from None
        key_id = key.key_id
    elif info.id not in _warned:
        _warned.add(info.id)
        log.warning("snapshot %s is not authenticated: no trusted key configured (snapshot.trusted_keys); anyone "
                    "who can write the snapshot bucket could have forged it", info.id)
    try:
        meta_bytes = s3a.get_bytes(dest.client, dest.bucket, dest.folder(info.id) + mf.META)
        if hashlib.sha256(meta_bytes).hexdigest() == sums.get(mf.META):
            meta = mf.parse_json_object(meta_bytes, f"{info.id}/{mf.META}")
            if datetime.fromisoformat(str(meta.get("fence"))).tzinfo is not None:  # else `load`'s stand-in stays
                info.meta = meta
    except Exception as exc:  # left to the callers' own checks, which name what is wrong
        log.debug("re-reading meta.json of %s: %s", info.id, exc)
    auth = Authentication(snapshot_id=info.id, digest=digest, authenticated=bool(trusted), key_id=key_id, sums=sums)
    info.authentication = auth
    return auth
