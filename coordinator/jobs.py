"""Building a run's job directory (docs/job-protocol.md) from what the run reads.

The file names and caps are :mod:`sdk.protocol.jobdir`'s, the ones the worker reads the job
back with: no name is typed out here, and no file is written that the worker would refuse to
read. Secrets are not written here: the launcher hands them over after its isolation check.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from coordinator.context import Services
from coordinator.logstore import LogHead, head
from coordinator.rooms import envelope_of
from coordinator.sources import RunSources, collect_sources
from coordinator.storage.models import RunRow
from coordinator.worker import worker_measurement_id
from sdk.errors import ConfigError, InputError
from sdk.protocol import jobdir as layout
from sdk.protocol.canonical import canonical_json
from sdk.protocol.dsse import Envelope


@dataclass(frozen=True)
class JobInputs:
    """Everything one job is built from: what the run reads and the log head it extends."""

    run_id: str
    sources: RunSources
    log: LogHead


def gather(services: Services, run: RunRow) -> JobInputs:
    """Collect a run's job inputs when it is executed: the five steps of
    :func:`coordinator.sources.collect_sources` (taken again, as state may have changed since
    the request was pre-checked), the worker image check (the measurement of the image the
    launcher would run now against the provisioned worker's) and the log head.

    Raises domain errors (the run fails): those of ``collect_sources`` (approvals are left
    for the worker to judge), and ``ConfigError`` when the worker image changed since it was
    provisioned.
    """
    sources = collect_sources(services, run.room_id, run.bundle_digest, require_approved=False)
    if (services.launcher.isolation == "container"
            and worker_measurement_id(services.launcher) != sources.worker.image_id):
        raise ConfigError("the worker image changed since provisioning: provision again")
    with services.db.read() as s:
        log = head(s, run.room_id)
    return JobInputs(run.run_id, sources, log)


def _write(job: Path, name: str, value: object, max_bytes: int) -> None:
    """Write ``value`` as canonical JSON to ``job/name`` (0644), refusing a file the worker
    would refuse to read (larger than ``max_bytes``)."""
    data = canonical_json(value)
    if len(data) > max_bytes:
        raise InputError(f"job: {name} would be larger than {max_bytes} bytes")
    fd = os.open(job / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.fchmod(fd, 0o644)  # whatever the umask
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _write_list(job: Path, name: str, envelopes: list[Envelope], max_items: int) -> None:
    if len(envelopes) > max_items:
        raise InputError(f"job: {name} would hold more than {max_items} envelopes")
    _write(job, name, [e.to_dict() for e in envelopes], layout.MAX_LIST_BYTES)


def write_job_dir(services: Services, inputs: JobInputs, job: Path) -> None:
    """Lay out the job directory exactly as docs/job-protocol.md says (no secrets: the launcher
    writes those after its isolation check). Files 0644, directories 0755 (readable by the
    worker's uid); ciphertexts are hard links to the blob store.

    Raises ``InputError`` for a file over the caps the worker reads it with
    (:mod:`sdk.protocol.jobdir`).
    """
    sources = inputs.sources
    envelope_cap = layout.MAX_ENVELOPE_FILE_BYTES
    job.mkdir(mode=0o755, parents=True)
    for sub in (job, job / layout.DATA_DIR, job / layout.LOG_DIR):
        sub.mkdir(mode=0o755, exist_ok=True)
        os.chmod(sub, 0o755)  # noqa: S103 - the worker uid (65534) must read the job
    _write(job, layout.JOB_META, {"run_id": inputs.run_id, "room_id": sources.room.room_id},
           layout.MAX_JOB_META_BYTES)
    _write(job, layout.MANIFEST, sources.room.envelope.to_dict(), envelope_cap)
    _write_list(job, layout.ATTESTATIONS, sources.attestations, layout.MAX_ATTESTATIONS)
    _write(job, layout.BUNDLE, sources.bundle_envelope.to_dict(), envelope_cap)
    _write_list(job, layout.APPROVALS, sources.approvals, layout.MAX_APPROVALS)
    _write_list(job, layout.UPLOADS, [envelope_of(u.envelope) for u in sources.uploads],
                layout.MAX_UPLOADS)
    for upload in sources.uploads:
        target = job / layout.sealed_name(upload.ciphertext_digest)
        if not target.exists():
            services.blobs.link_into(upload.ciphertext_digest, target)
    _write_list(job, layout.LOG_ENTRIES, inputs.log.entries, layout.MAX_LOG_ENTRIES)
    checkpoint = inputs.log.checkpoint
    _write(job, layout.LOG_CHECKPOINT, None if checkpoint is None else checkpoint.to_dict(),
           envelope_cap)
