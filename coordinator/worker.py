"""Provisioning the worker: ``python -m enclave provision`` through the launcher.

The worker generates its keys inside its container, seals them to the platform secret and its
measurement, and returns an attestation plus the sealed key. The coordinator verifies the
attestation against the platform key it holds (signature, provider, the measurement it asked
for, the launcher's isolation) before storing and publishing it; the sealed key stays opaque here.

The measurement's ``image_id`` is the launcher's :meth:`~coordinator.launchers.Launcher.measurement_id`:
for containers the tree digest of the worker image (``sha256:<hex>``, reproducible from a
rebuild), never the Docker image id; ``unisolated`` for the process launcher.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import shutil
from pathlib import Path

from sqlalchemy import select, update

from coordinator.launchers.base import JOB_MOUNT, UNISOLATED_MEASUREMENT, Launcher
from coordinator.settings import Settings
from coordinator.storage.db import Database, utcnow
from coordinator.storage.models import Worker
from sdk.errors import AttestationError, ConfigError, ConflictError, InputError, SignatureError
from sdk.protocol import jobdir as layout
from sdk.protocol.canonical import parse_json
from sdk.protocol.clock import utcnow as clock_now
from sdk.protocol.dsse import Envelope, open_envelope
from sdk.protocol.fields import expect_mapping
from sdk.protocol.keys import Signer
from sdk.protocol.models import Attestation
from sdk.protocol.verify import verify_hardware_statement

PLATFORM_KEY_BYTES = 32
MAX_PROVISION_OUTPUT = 1024 * 1024
UNISOLATED_IMAGE_ID = UNISOLATED_MEASUREMENT


def ensure_platform_key(path: Path) -> bytes:
    """Read the platform secret, creating a random one (mode 0600) when the file is missing.

    Raises ``ConfigError`` when the file exists but is not exactly 32 bytes.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(PLATFORM_KEY_BYTES))
    return read_platform_key(path)


def read_platform_key(path: Path) -> bytes:
    """The 32-byte platform secret. Raises ``ConfigError``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"platform key {path} cannot be read") from exc
    if len(data) != PLATFORM_KEY_BYTES:
        raise ConfigError(f"platform key {path} must hold exactly 32 bytes")
    return data


def platform_public_key(path: Path) -> bytes:
    """The platform's Ed25519 public key (what manifests pin in ``workers.platform_keys``)."""
    return Signer.from_seed(read_platform_key(path)).public_key


def current_worker(db: Database) -> Worker:
    """The current provisioned worker. Raises ``ConflictError`` when none is provisioned."""
    with db.read() as s:
        worker = s.scalars(select(Worker).where(Worker.current.is_(True))).first()
    if worker is None:
        raise ConflictError("no worker is provisioned yet (operator: provision one)")
    return worker


def worker_measurement_id(launcher: Launcher) -> str:
    """The ``image_id`` the worker is measured with: the tree digest of the worker image
    (``sha256:<hex>``), or ``unisolated``. Raises ``ConfigError`` when it cannot be measured."""
    return launcher.measurement_id()


def parse_provision_output(stdout: bytes, platform_public: bytes, image_id: str,
                           isolation: str, provider: str = "simulated",
                           ) -> tuple[Envelope, Attestation, bytes]:
    """Check the worker's provisioning document; returns (envelope, attestation, sealed key).

    ``provider`` is the one the worker was asked for: ``simulated`` statements must be signed
    by this platform; a hardware statement must verify with
    :func:`sdk.protocol.verify.verify_hardware_statement` now (no registers: the parties pin
    them in their manifest).

    ``image_id`` is the measurement's (:func:`worker_measurement_id`) the worker was given.

    Raises ``AttestationError`` for anything that is not a valid attestation of the worker we
    started, ``ConfigError`` when the worker reports a failure.
    """
    try:
        doc = expect_mapping(parse_json(stdout, max_bytes=MAX_PROVISION_OUTPUT), "provision")
    except InputError as exc:
        raise AttestationError("provisioning: the worker's output is not a result document") \
            from exc
    if doc.get("status") != "succeeded":
        code = doc.get("error_code")
        raise ConfigError(f"provisioning failed in the worker ({code if isinstance(code, str) else '?'})")
    if set(doc) != {"status", "attestation", "sealed_worker_key"}:
        raise AttestationError("provisioning: unexpected fields in the result")
    try:
        envelope = Envelope.from_dict(doc["attestation"])
        if provider == "simulated":
            payload, _ = open_envelope(envelope, Attestation.KIND, {"platform": platform_public})
            attestation = Attestation.from_dict(payload)
        else:  # the TEE's evidence, at this moment, over the keys it names (ADR 0008)
            attestation = verify_hardware_statement(envelope, registers={}, at=clock_now())
        sealed_text = doc["sealed_worker_key"]
        if not isinstance(sealed_text, str):
            raise InputError("sealed key must be base64 text")
        sealed = base64.b64decode(sealed_text.encode("ascii"), validate=True)
    except (InputError, SignatureError, binascii.Error, ValueError) as exc:
        raise AttestationError("provisioning: attestation not signed by this platform") from exc
    if attestation.measurement.image_id != image_id or attestation.isolation != isolation:
        raise AttestationError("provisioning: attestation names another image or isolation")
    if attestation.provider != provider or not 28 <= len(sealed) <= 4096:
        raise AttestationError("provisioning: unexpected provider or sealed key")
    return envelope, attestation, sealed


def provision_worker(settings: Settings, launcher: Launcher,
                     db: Database | None = None) -> Envelope:
    """Provision a worker through ``launcher`` with the platform secret; verify, store and
    publish its attestation (it becomes the current worker). Returns the attestation envelope.

    Raises ``ConfigError`` (no platform key, engine or image problems, worker failure),
    ``ResourceError`` (deadline) or ``AttestationError`` (an attestation we cannot accept).
    """
    database = db or Database(settings.db_url)
    seed = read_platform_key(settings.platform_key_file)
    image_id = worker_measurement_id(launcher)
    job_dir = settings.data_dir / "jobs" / f"provision-{secrets.token_hex(8)}"
    job_dir.mkdir(mode=0o755, parents=True)
    try:
        result = launcher.launch(
            job_dir,
            ["provision", "--job", JOB_MOUNT, "--image-id", image_id,
             "--isolation", launcher.isolation, "--provider", settings.attestation_provider],
            {layout.PLATFORM_KEY_SECRET: seed},
            run_id=job_dir.name,
            deadline_s=min(settings.run_deadline_s, 300.0),
        )
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)
    resource = result.resource_error()
    if resource is not None:
        raise resource
    if launcher.ran_measurement(result) != image_id:  # the tag moved during the launch
        raise ConfigError("the worker image changed during provisioning: provision again")
    envelope, attestation, sealed = parse_provision_output(
        result.stdout, Signer.from_seed(seed).public_key, image_id, launcher.isolation,
        settings.attestation_provider,
    )
    with database.write() as s:
        s.execute(update(Worker).values(current=False))
        s.merge(Worker(attestation_digest=envelope.digest(),
                       attestation=envelope.to_json().decode(), sealed_key=sealed,
                       image_id=attestation.measurement.image_id,
                       isolation=attestation.isolation, current=True, created_at=utcnow()))
    return envelope
