"""Reading a job directory (docs/job-protocol.md) with size caps, before anything is parsed.

The file names and caps are :mod:`sdk.protocol.jobdir`'s, the ones the coordinator writes with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sdk.errors import InputError
from sdk.protocol import jobdir as layout
from sdk.protocol.canonical import parse_json
from sdk.protocol.dsse import Envelope
from sdk.protocol.fields import check_keys, check_name, expect_mapping, get_str


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
    return Envelope.from_json(read_capped(path, layout.MAX_ENVELOPE_FILE_BYTES))


def read_envelope_list(path: Path, max_items: int = layout.MAX_LOG_ENTRIES) -> list[Envelope]:
    """A JSON list of envelopes."""
    data = parse_json(read_capped(path, layout.MAX_LIST_BYTES), max_bytes=layout.MAX_LIST_BYTES)
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
            parse_json(
                read_capped(root / layout.JOB_META, layout.MAX_JOB_META_BYTES),
                max_bytes=layout.MAX_JOB_META_BYTES,
            ),
            "job",
        )
        check_keys(meta, "job", ["run_id", "room_id"])
        run_id = get_str(meta, "run_id", "job", max_len=64)
        check_name(run_id, "job.run_id")
        checkpoint_raw = parse_json(
            read_capped(root / layout.LOG_CHECKPOINT, layout.MAX_ENVELOPE_FILE_BYTES),
            max_bytes=layout.MAX_ENVELOPE_FILE_BYTES,
        )
        attestations = read_envelope_list(root / layout.ATTESTATIONS, layout.MAX_ATTESTATIONS)
        if not attestations:
            raise InputError("job: no attestation")
        return cls(
            root=root,
            run_id=run_id,
            room_id=check_name(meta["room_id"], "job.room_id"),
            manifest=read_envelope(root / layout.MANIFEST),
            attestations=attestations,
            bundle=read_envelope(root / layout.BUNDLE),
            approvals=read_envelope_list(root / layout.APPROVALS, layout.MAX_APPROVALS),
            uploads=read_envelope_list(root / layout.UPLOADS, layout.MAX_UPLOADS),
            log_entries=read_envelope_list(root / layout.LOG_ENTRIES, layout.MAX_LOG_ENTRIES),
            checkpoint=None if checkpoint_raw is None else Envelope.from_dict(checkpoint_raw),
        )

    def sealed_path(self, ciphertext_digest: str) -> Path:
        """Where the ciphertext of the upload with ``ciphertext_digest`` lies."""
        return self.root / layout.sealed_name(ciphertext_digest)


def read_secret(root: Path, name: str) -> bytes:
    """A secret the launcher handed over after checking the worker's isolation."""
    return read_capped(root / layout.secret_name(name), layout.MAX_SECRET_BYTES)
