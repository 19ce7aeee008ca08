"""Reading a job directory (docs/job-protocol.md) with size caps, before anything is parsed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sdk.errors import InputError
from sdk.protocol.fields import check_keys, check_name, expect_mapping, get_str
from sdk.protocol.canonical import parse_json
from sdk.protocol.dsse import MAX_ENVELOPE_BYTES, Envelope

MAX_LIST_BYTES = 64 * 1024 * 1024
MAX_SECRET_BYTES = 4096


def read_capped(path: Path, max_bytes: int) -> bytes:
    """Read a file, refusing it when it is larger than ``max_bytes`` (checked before reading)."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise InputError(f"job: {path.name} larger than {max_bytes} bytes")
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise InputError(f"job: cannot read {path.name}") from exc
    if len(data) > max_bytes:
        raise InputError(f"job: {path.name} larger than {max_bytes} bytes")
    return data


def read_envelope(path: Path) -> Envelope:
    """One envelope file."""
    return Envelope.from_json(read_capped(path, MAX_ENVELOPE_BYTES))


def read_envelope_list(path: Path, max_items: int = 1_000_000) -> list[Envelope]:
    """A JSON list of envelopes."""
    data = parse_json(read_capped(path, MAX_LIST_BYTES), max_bytes=MAX_LIST_BYTES)
    if not isinstance(data, list) or len(data) > max_items:
        raise InputError(f"job: {path.name} must be a list of at most {max_items} envelopes")
    return [Envelope.from_dict(item) for item in data]


@dataclass(frozen=True)
class JobFiles:
    """The raw (parsed but unverified) contents of a job directory."""

    root: Path
    run_id: str
    room_id: str
    manifest: Envelope
    attestations: list[Envelope]
    bundle: Envelope
    approvals: list[Envelope]
    uploads: list[Envelope]
    log_entries: list[Envelope]
    checkpoint: Envelope | None

    @classmethod
    def load(cls, root: Path) -> JobFiles:
        """Load and structurally parse every file. Raises ``InputError``."""
        meta = expect_mapping(
            parse_json(read_capped(root / "job.json", 4096), max_bytes=4096), "job"
        )
        check_keys(meta, "job", ["run_id", "room_id"])
        run_id = get_str(meta, "run_id", "job", max_len=64)
        check_name(run_id, "job.run_id")
        checkpoint_raw = parse_json(
            read_capped(root / "log" / "checkpoint.json", MAX_ENVELOPE_BYTES),
            max_bytes=MAX_ENVELOPE_BYTES,
        )
        attestations = read_envelope_list(root / "attestations.json", 1024)
        if not attestations:
            raise InputError("job: no attestation")
        return cls(
            root=root,
            run_id=run_id,
            room_id=check_name(meta["room_id"], "job.room_id"),
            manifest=read_envelope(root / "manifest.json"),
            attestations=attestations,
            bundle=read_envelope(root / "bundle.json"),
            approvals=read_envelope_list(root / "approvals.json", 256),
            uploads=read_envelope_list(root / "uploads.json", 256),
            log_entries=read_envelope_list(root / "log" / "entries.json"),
            checkpoint=None if checkpoint_raw is None else Envelope.from_dict(checkpoint_raw),
        )

    def sealed_path(self, ciphertext_digest: str) -> Path:
        return self.root / "data" / f"{ciphertext_digest}.sealed"


def read_secret(root: Path, name: str) -> bytes:
    """A secret the launcher handed over after checking the worker's isolation."""
    return read_capped(root / "secrets" / name, MAX_SECRET_BYTES)
