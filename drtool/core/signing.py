"""Authenticated restore points: Ed25519 signatures over what a snapshot commits.

Checksums only prove that artifacts agree with each other; anyone who can write the snapshot bucket can recompute
them (and age does not help: its recipient is a public key in meta.json). A snapshot is trusted because the cron
host's private key signed it and the restore host pins the matching public key.

What is signed is a canonical, domain-separated statement binding the snapshot id (its folder name) to the sha256
of its SHA256SUMS, which covers meta.json, the dump and the manifest:

    b"drtool-snapshot-signature-v1\\n" + <snapshot id> + b"\\n" + <sha256 of SHA256SUMS, lower-case hex> + b"\\n"

The domain tag keeps a signature from being valid for anything else the key might ever sign; the id stops a
signed snapshot from being replayed under another folder name. The signature lives in the COMMITTED marker.

Key formats:
- private key: PKCS#8 PEM (what `drtool keys generate` writes, and `openssl genpkey -algorithm ed25519`); the base64
  body alone (one line, for an environment variable) is accepted too;
- public key: one line `drtool-ed25519:<base64 of the 32 raw bytes>`; its key id is the first 16 hex digits of the
  sha256 of those bytes.

Nothing here echoes key material: every error is a fixed message, raised without the underlying exception.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "ed25519"
PUBLIC_PREFIX = "drtool-ed25519:"
STATEMENT_TAG = "drtool-snapshot-signature-v1"
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
_PEM_LINE = re.compile(r"^-----(BEGIN|END) [A-Z ]+-----$")


class KeyFormatError(ValueError):
    """A key that cannot be parsed; the message never contains the key."""


class SignatureRejected(ValueError):
    """A snapshot whose signature is missing, malformed, or made by no trusted key."""


@dataclass(frozen=True)
class PublicKey:
    raw: bytes

    @property
    def key_id(self) -> str:
        return fingerprint(self.raw)

    @property
    def text(self) -> str:
        return PUBLIC_PREFIX + base64.b64encode(self.raw).decode("ascii")

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except InvalidSignature:
            return False
        return True


def fingerprint(raw_public: bytes) -> str:
    """Short, stable name of a public key for logs, COMMITTED and `snapshots list` (not a security boundary:
    signatures are checked against every trusted key, whatever key id a marker claims)."""
    return hashlib.sha256(raw_public).hexdigest()[:16]


def generate() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_pem(key: Ed25519PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted: the file's 0600 mode (and the host) protect it, as for an SSH host key."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_private(text: str | bytes) -> Ed25519PrivateKey:
    """A PKCS#8 PEM Ed25519 private key, or its base64 body alone; KeyFormatError otherwise."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    body = "".join(line.strip() for line in text.strip().splitlines() if not _PEM_LINE.match(line.strip()))
    try:
        der = base64.b64decode(body, validate=True)
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, binascii.Error, NotImplementedError):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFormatError("not an unencrypted Ed25519 private key in PKCS#8 PEM form "
                             "(as written by `drtool keys generate`)")
    return key


def secret_forms(text: str | bytes) -> list[str]:
    """The strings of a private key file that must be masked wherever drtool writes text."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    body = [line for line in lines if not _PEM_LINE.match(line)]
    return [text.strip(), "".join(body), *body]


def public_of(key: Ed25519PrivateKey) -> PublicKey:
    return PublicKey(key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def parse_public(text: str) -> PublicKey:
    """`drtool-ed25519:<base64>` -> PublicKey; KeyFormatError naming the expected form otherwise."""
    text = text.strip()
    if not text.startswith(PUBLIC_PREFIX):
        raise KeyFormatError(f"a public key starts with {PUBLIC_PREFIX!r} (see `drtool keys public`)")
    try:
        raw = base64.b64decode(text[len(PUBLIC_PREFIX):], validate=True)
    except (ValueError, binascii.Error):
        raise KeyFormatError("public key is not valid base64") from None
    if len(raw) != 32:
        raise KeyFormatError("an Ed25519 public key is 32 bytes")
    return PublicKey(raw)


def split_key_list(text: str) -> list[str]:
    """Items of a key list (setting or file): separated by commas or newlines; blank and `#` lines ignored."""
    items = (item.strip() for line in text.splitlines() for item in line.split(","))
    return [item for item in items if item and not item.startswith("#")]


def statement(snapshot_id: str, sums_digest: str) -> bytes:
    """The exact bytes that are signed; see the module docstring."""
    if not _DIGEST.match(sums_digest):
        raise ValueError("the SHA256SUMS digest must be 64 lower-case hex digits")
    if "\n" in snapshot_id:
        raise ValueError("a snapshot id cannot contain a line break")
    return f"{STATEMENT_TAG}\n{snapshot_id}\n{sums_digest}\n".encode()


def sign(key: Ed25519PrivateKey, snapshot_id: str, sums_digest: str) -> dict[str, str]:
    """The signature record stored in the COMMITTED marker."""
    value = key.sign(statement(snapshot_id, sums_digest))
    return {"algorithm": ALGORITHM, "statement": STATEMENT_TAG, "key_id": public_of(key).key_id,
            "value": base64.b64encode(value).decode("ascii")}


def check_signature(record: Any, snapshot_id: str, sums_digest: str, trusted: Iterable[PublicKey]) -> PublicKey:
    """The trusted key that signed (snapshot_id, sums_digest); SignatureRejected saying why otherwise."""
    keys = list(trusted)
    if record is None:
        raise SignatureRejected("it is not signed")
    if not isinstance(record, dict) or record.get("algorithm") != ALGORITHM \
            or record.get("statement") != STATEMENT_TAG or not isinstance(record.get("value"), str):
        raise SignatureRejected("its signature record is malformed or of an unknown kind")
    try:
        value = base64.b64decode(record["value"], validate=True)
    except (ValueError, binascii.Error):
        raise SignatureRejected("its signature is not valid base64") from None
    if len(value) != 64 or not _DIGEST.match(sums_digest):
        raise SignatureRejected("its signature is malformed")
    message = statement(snapshot_id, sums_digest)
    for key in keys:
        if key.verify(value, message):
            return key
    claimed = record.get("key_id")
    # The claimed key id comes from the bucket: shown only when it has the form drtool writes.
    claimed_text = claimed if isinstance(claimed, str) and _KEY_ID.match(claimed) else "(unnamed)"
    if any(hmac.compare_digest(k.key_id, claimed_text) for k in keys):
        raise SignatureRejected(f"its signature by trusted key {claimed_text} does not match its contents")
    raise SignatureRejected(f"it is signed by key {claimed_text}, which is not a trusted key")


def normalize_digest(text: str) -> str:
    """An --expect-digest value: 64 hex digits (any case, an optional `sha256:` prefix); ValueError otherwise."""
    value = text.strip().lower().removeprefix("sha256:")
    if not _DIGEST.match(value):
        raise ValueError("expected the 64 hex digits `drtool snapshot create` printed as the snapshot's digest")
    return value
