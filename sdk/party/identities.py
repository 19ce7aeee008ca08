"""Public identity files: what a party hands the others for the room file (``NAME.pub``)."""

from __future__ import annotations

from pathlib import Path

from sdk.errors import InputError
from sdk.party.home import PUBLIC_FILE_TYPE
from sdk.protocol.canonical import canonical_json
from sdk.protocol.keys import PublicIdentity, identity_from_file


def public_file_bytes(identity: PublicIdentity) -> bytes:
    """The ``.pub`` file of an identity (readable by ``identity_from_file``)."""
    return canonical_json({"type": PUBLIC_FILE_TYPE, "version": 1, "public": identity.to_dict()})


def load_identity(path: str | Path) -> PublicIdentity:
    """The public identity in a ``.pub`` or ``.key`` file.

    Raises ``InputError`` when the file does not exist or holds no identity.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"identity file {p} does not exist")
    return identity_from_file(p)
