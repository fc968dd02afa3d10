"""`drtool keys generate|public`: the Ed25519 key pair that authenticates snapshots.

The private key stays on the host that runs `snapshot create` (snapshot.signing_key_file); the public key line is
what a restore host pins (snapshot.trusted_keys). Output is the public key line and a `# key id` comment line,
which is itself a valid trusted-keys file: `drtool keys public --key KEY > trusted.pub`.
"""

from __future__ import annotations

from pathlib import Path

import click

from drtool.cli.app import App, global_options, pass_app


@click.group("keys")
def keys_group() -> None:
    """Create and inspect the key pair that signs snapshots (restore points a trusted key did not sign are refused)."""


def _show(app: App, command: str, public_text: str, key_id: str, **extra: str) -> None:
    payload = {"event": "result", "command": command, "public_key": public_text, "key_id": key_id, **extra}

    def render() -> None:
        app.echo(public_text)
        app.echo(f"# key id {key_id}")

    app.result(payload, render)


@keys_group.command("generate")
@global_options
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the private key (created with mode 0600; an existing file is never replaced).")
@pass_app
def generate_cmd(app: App, out: Path) -> int:
    """Create a new private key file and print its public key.

    Set snapshot.signing_key_file (DRTOOL_SNAPSHOT_SIGNING_KEY_FILE) to OUT on the host that runs `snapshot create`,
    and the printed `drtool-ed25519:...` line as snapshot.trusted_keys where snapshots are verified and restored.
    Never put the private key in the snapshot bucket. Exit 2 when OUT exists.
    """
    from drtool.core import signing
    from drtool.ops.snapshot.auth import write_private_key

    key = signing.generate()
    write_private_key(out, key)
    public = signing.public_of(key)
    _show(app, "keys generate", public.text, public.key_id, path=str(out))
    return 0


@keys_group.command("public")
@global_options
@click.option("--key", "key_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Private key file [default: snapshot.signing_key_file or snapshot.signing_key].")
@pass_app
def public_cmd(app: App, key_path: Path | None) -> int:
    """Print the public key (and key id) of a private key file, for snapshot.trusted_keys."""
    from drtool.core import signing
    from drtool.errors import ConfigError
    from drtool.ops.snapshot.auth import signing_key

    flags = {"snapshot.signing_key_file": str(key_path)} if key_path else {}
    key = signing_key(app.settings(flags))
    if key is None:
        raise ConfigError("no private key to read", hint="pass --key FILE or set snapshot.signing_key_file")
    public = signing.public_of(key)
    _show(app, "keys public", public.text, public.key_id)
    return 0
