"""Provisioning a worker, as an operator command does it: directly in a coordinator's data
folder, or through a running coordinator's admin API. Used by ``worker provision`` and the demo.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdk.errors import ConfigError
from sdk.protocol.canonical import parse_json
from sdk.protocol.dsse import Envelope
from sdk.protocol.models import Attestation


@dataclass(frozen=True)
class WorkerInfo:
    """A provisioned worker as the operator publishes it."""

    attestation: Envelope
    platform_key: str
    image_id: str
    code_digest: str
    isolation: str

    def describe(self, image: str = "IMAGE") -> list[str]:
        """Lines for the operator (and for the room file). For a container worker the image
        measurement is the tree digest of ``image``, which a rebuild reproduces."""
        reproduce = ""
        if self.image_id.startswith("sha256:"):
            reproduce = (f" (a rebuild reproduces it: rebuild with `sealroom worker build` and "
                         f"check with `sealroom worker measure {image}`)")
        return [
            f"worker attestation {self.attestation.digest()} (simulated provider, isolation "
            f"{self.isolation})",
            f"platform key       {self.platform_key}",
            f"measurement        image {self.image_id}{reproduce}",
            f"                   code  {self.code_digest}",
        ]


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in ("data_dir", "launcher", "worker_image", "database_url", "public_origin"):
        value = getattr(args, name, None)
        if value is not None:
            values[name] = Path(value) if name == "data_dir" else value
    if hasattr(args, "dev"):  # serve: a public origin, or --dev (else refuse before anything)
        from coordinator.settings import NO_ORIGIN, dev_origin, origin_in_environment

        configured = "public_origin" in values or origin_in_environment()
        if args.dev:
            # the origin of the address served, never of a request's headers; an explicit
            # --public-origin or $SEALROOM_PUBLIC_ORIGIN wins
            values["dev"] = True
            if not configured:
                values["public_origin"] = dev_origin(args.host, args.port)
        elif not configured:
            raise ConfigError(NO_ORIGIN)
    return values


def settings_from(args: argparse.Namespace) -> Any:
    """Coordinator settings from the environment, with the command's options on top."""
    from coordinator.settings import Settings

    return Settings(**_overrides(args))


def make_launcher(settings: Any) -> Any:
    """The launcher the settings name (Docker by default; process = unisolated)."""
    from coordinator.launchers import DockerLauncher, ProcessLauncher

    if settings.launcher == "process":
        return ProcessLauncher()
    return DockerLauncher(settings.worker_image, instance=settings.instance)


def provision(settings: Any) -> WorkerInfo:
    """Provision and publish a worker for the coordinator whose data folder ``settings``
    names (creating the platform secret when missing)."""
    from coordinator.storage.db import Database
    from coordinator.worker import ensure_platform_key, platform_public_key, provision_worker

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_platform_key(settings.platform_key_file)
    db = Database(settings.db_url)
    try:
        db.create_all()
        envelope = provision_worker(settings, make_launcher(settings), db)
    finally:
        db.dispose()
    attestation = Attestation.from_dict(parse_json(envelope.payload))
    return WorkerInfo(
        attestation=envelope,
        platform_key=platform_public_key(settings.platform_key_file).hex(),
        image_id=attestation.measurement.image_id,
        code_digest=attestation.measurement.code_digest,
        isolation=attestation.isolation,
    )


def _http(method: str, url: str, **kwargs: Any) -> Any:
    import httpx

    from sdk.errors import NetworkError, error_for_code

    try:
        answer = httpx.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        raise NetworkError(f"coordinator unreachable ({type(exc).__name__})") from exc
    if answer.status_code >= 400:
        try:
            err = answer.json()["error"]
            code, message = str(err["code"]), str(err["message"])
        except (ValueError, KeyError, TypeError):
            raise NetworkError(f"coordinator answered HTTP {answer.status_code}") from None
        raise error_for_code(code, message)
    return answer.json()


def provision_remote(url: str, admin_token: str, platform_key_file: Path | None = None
                     ) -> WorkerInfo:
    """Ask the coordinator at ``url`` to provision a worker (``POST /v1/admin/workers``, admin
    token); its platform key comes from ``platform_key_file`` (an operator on the host) or
    ``GET /v1/platform``."""
    info = _http("POST", f"{url}/v1/admin/workers", timeout=900,
                 headers={"Authorization": f"Bearer {admin_token}"})
    if platform_key_file is not None:
        from coordinator.worker import platform_public_key

        platform_key = platform_public_key(platform_key_file).hex()
    else:
        platform_key = str(_http("GET", f"{url}/v1/platform", timeout=30)["platform_key"])
    envelope = Envelope.from_dict(info["envelope"])
    attestation = Attestation.from_dict(parse_json(envelope.payload))
    return WorkerInfo(
        attestation=envelope,
        platform_key=platform_key,
        image_id=attestation.measurement.image_id,
        code_digest=attestation.measurement.code_digest,
        isolation=attestation.isolation,
    )
