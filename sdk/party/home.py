"""The local state of the ``sealroom`` command (``--home``, ``SEALROOM_HOME``, ``~/.sealroom``).

Layout::

    keys/NAME.key                 party key files (mode 0600)
    keys/NAME.pub                 their public identities (what goes into a room file)
    rooms/ROOM/manifest.json      the signed manifest this machine verified (its digest is pinned)
    rooms/ROOM/checkpoint.json    the newest log checkpoint this machine verified for the room
    rooms/ROOM/receipts/RUN.json  receipt files written by ``result get``

The pinned manifest digest and the last checkpoint are what make a coordinator's lies
visible: a manifest that changed under the parties, or a log that was rolled back or forked.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from sdk.errors import ConflictError, InputError
from sdk.protocol.canonical import canonical_json, parse_json
from sdk.protocol.dsse import Envelope
from sdk.protocol.fields import check_name
from sdk.protocol.records import Checkpoint

PUBLIC_FILE_TYPE = "sealroom-party-public"
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class Home:
    """Files under the home directory; every write is atomic."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser()

    # -- keys -------------------------------------------------------------------------------

    def key_path(self, name: str) -> Path:
        """Where the key file of party ``name`` lives."""
        check_name(name, "party name")
        return self.root / "keys" / f"{name}.key"

    def key_names(self) -> list[str]:
        """Names of the key files present."""
        folder = self.root / "keys"
        return sorted(p.stem for p in folder.glob("*.key")) if folder.is_dir() else []

    # -- rooms ------------------------------------------------------------------------------

    def room_dir(self, room_id: str) -> Path:
        """The folder of one room."""
        check_name(room_id, "room id")
        return self.root / "rooms" / room_id

    def room_ids(self) -> list[str]:
        """Rooms with a pinned manifest."""
        folder = self.root / "rooms"
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if (p / "manifest.json").is_file())

    def pinned_manifest(self, room_id: str) -> Envelope | None:
        """The manifest envelope pinned for ``room_id`` (not re-verified here)."""
        path = self.room_dir(room_id) / "manifest.json"
        if not path.is_file():
            return None
        return Envelope.from_json(path.read_bytes())

    def pin_manifest(self, room_id: str, envelope: Envelope, *, replace: bool = False) -> bool:
        """Pin a verified manifest; returns True when the pin is new or changed.

        The same digest with more signatures replaces the stored copy. A different digest is
        refused (``ConflictError``) unless ``replace``: a changed room needs a new decision.
        """
        current = self.pinned_manifest(room_id)
        if current is not None and current.digest() != envelope.digest() and not replace:
            raise ConflictError(
                f"room {room_id}: this machine pinned manifest {current.digest()[:12]}, "
                f"not {envelope.digest()[:12]} (re-pin deliberately with `room verify --replace`)"
            )
        changed = current is None or current.digest() != envelope.digest()
        _atomic_write(self.room_dir(room_id) / "manifest.json", envelope.to_json())
        if changed and replace:
            (self.room_dir(room_id) / "checkpoint.json").unlink(missing_ok=True)
        return changed

    def last_checkpoint(self, room_id: str) -> tuple[Checkpoint, Envelope] | None:
        """The newest checkpoint this machine verified for the room, if any."""
        path = self.room_dir(room_id) / "checkpoint.json"
        if not path.is_file():
            return None
        data = parse_json(path.read_bytes())
        if not isinstance(data, dict) or "envelope" not in data or "checkpoint" not in data:
            raise InputError(f"{path}: not a stored checkpoint")
        return Checkpoint.from_dict(data["checkpoint"]), Envelope.from_dict(data["envelope"])

    def save_checkpoint(self, room_id: str, checkpoint: Checkpoint, envelope: Envelope) -> None:
        """Remember a verified checkpoint (callers check consistency first)."""
        record: dict[str, Any] = {"checkpoint": checkpoint.to_dict(), "envelope": envelope.to_dict()}
        _atomic_write(self.room_dir(room_id) / "checkpoint.json", canonical_json(record))

    def receipt_path(self, room_id: str, run_id: str) -> Path:
        """Where ``result get`` keeps the receipt file of a run."""
        if not _RUN_ID.match(run_id):
            raise InputError("run id: expected letters, digits, '_' or '-'")
        return self.room_dir(room_id) / "receipts" / f"{run_id}.json"


def _atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
