"""Coordinator settings, read from ``SEALROOM_*`` environment variables (pydantic-settings).

Everything has a safe default for a single-host development setup: SQLite in ``data_dir``, the
process launcher off (Docker by default), no admin token (operator routes disabled) — except
the public origin, which has none: the app refuses to start without it unless ``dev`` is set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sdk.errors import ConfigError, InputError
from sdk.protocol.login import public_origin

GIB = 1024**3
MIB = 1024**2
#: the audience of a development coordinator given no origin (``python -m coordinator.serve``'s
#: default address); ``serve --dev`` sets the origin of the address it binds instead
DEV_ORIGIN = "http://127.0.0.1:8600"


NO_ORIGIN = ("no public origin: set SEALROOM_PUBLIC_ORIGIN or --public-origin to the URL parties "
             "use (e.g. https://coordinator.example), or pass --dev for a loopback development "
             "coordinator")


def origin_in_environment() -> bool:
    """Whether ``SEALROOM_PUBLIC_ORIGIN`` (or its deprecated alias ``SEALROOM_AUDIENCE``) is
    set, as the settings read it (names in any case)."""
    names = ("SEALROOM_PUBLIC_ORIGIN", "SEALROOM_AUDIENCE")
    return any(value and key.upper() in names for key, value in os.environ.items())


def dev_origin(host: str, port: int) -> str:
    """``http://HOST:PORT`` of the address a development coordinator binds (IPv6 in
    brackets): its origin under ``--dev``, never one taken from a request's headers."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Settings(BaseSettings):
    """The coordinator's configuration. Immutable once built."""

    model_config = SettingsConfigDict(env_prefix="SEALROOM_", frozen=True, extra="ignore")

    data_dir: Path = Field(default=Path("./sealroom-data"), description="blobs, jobs, SQLite")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///<data_dir>/sealroom.db"
    )
    admin_token: SecretStr | None = Field(default=None, description="operator bearer token")
    token_ttl: int = Field(default=900, ge=10, le=86400, description="party token lifetime (s)")
    challenge_ttl: int = Field(default=120, ge=5, le=3600, description="auth nonce lifetime (s)")
    public_origin: str | None = Field(
        default=None,
        description="scheme://host[:port] parties use and sign at login (never from headers)",
    )
    audience: str | None = Field(
        default=None, description="deprecated: SEALROOM_AUDIENCE, read as public_origin"
    )
    dev: bool = Field(
        default=False, description="development: start without a public origin (loopback only)"
    )
    # every CLI command logs in once: a party's script runs a command every second or two
    challenge_rate_per_key: int = Field(
        default=60, ge=1, le=10_000, description="login challenges per minute per signing key"
    )
    challenge_rate_per_address: int = Field(
        default=300, ge=1, le=100_000, description="login challenges per minute per address"
    )
    challenges_per_key: int = Field(
        default=4, ge=1, le=64, description="outstanding challenges kept per key (oldest purged)"
    )
    max_challenges: int = Field(
        default=10_000, ge=10, le=10_000_000, description="outstanding challenges kept (oldest "
        "purged)"
    )
    max_upload_bytes: int = Field(default=64 * GIB, ge=1, description="cap of one sealed upload")
    max_json_bytes: int = Field(default=16 * MIB, ge=1024, description="cap of any JSON body")
    max_result_bytes: int = Field(default=256 * MIB, ge=1024, description="cap of a worker result")
    pending_manifest_ttl_s: int = Field(
        default=7 * 86400, ge=1, le=366 * 86400,
        description="how long a manifest not yet signed by every party stays (an invitation)",
    )
    pending_manifests_per_key: int = Field(
        default=32, ge=1, le=10_000,
        description="pending manifests one signing key may have submitted at once",
    )
    state_cache_max_age_s: float = Field(
        default=2.0, ge=0, le=60,
        description="longest a value derived from the database is reused without a write",
    )
    run_concurrency: int = Field(default=2, ge=1, le=64, description="runs executed at once")
    run_deadline_s: float = Field(default=600.0, gt=0, description="wall-clock limit of a run")
    launcher: Literal["docker", "process"] = "docker"
    attestation_provider: Literal["simulated", "aws-nitro", "amd-sev-snp", "intel-tdx"] = Field(
        default="simulated",
        description="who attests provisioned workers: the platform key (simulated), or the TEE "
        "the worker runs in (amd-sev-snp, intel-tdx: the Docker launcher binds configfs-tsm)",
    )
    worker_image: str = "sealroom-worker:latest"
    warm_worker: bool = Field(
        default=True,
        description="keep one hardened worker container started and waiting for the next run "
        "(it has seen no job, key or data; one container still serves one run)",
    )
    instance: str = Field(default="default", description="label of this coordinator's containers")
    platform_key_path: Path | None = Field(
        default=None, description="the 32-byte platform secret; default <data_dir>/platform.key"
    )
    provision_on_start: bool = Field(
        default=False, description="provision a worker at start-up when none is provisioned"
    )
    poll_interval_s: float = Field(default=0.5, gt=0, le=60, description="run queue polling")
    # -- request limits: coordinator.serve applies them to uvicorn and its HTTP parser, the
    # body middleware the body caps (docs/operators.md, "Limits")
    max_header_bytes: int = Field(default=64 * 1024, ge=1024, le=MIB,
                                  description="request line and headers of one request (431)")
    max_header_count: int = Field(default=100, ge=8, le=1000,
                                  description="headers of one request (431)")
    max_connections: int = Field(default=512, ge=1, le=100_000,
                                 description="open connections; one more is closed unanswered")
    backlog: int = Field(default=1024, ge=1, le=65_535,
                         description="connections the kernel queues until they are accepted")
    header_timeout_s: float = Field(default=10.0, gt=0, le=600,
                                    description="to send a request's line and headers (408)")
    body_timeout_s: float = Field(default=30.0, gt=0, le=3600,
                                  description="window of the body rate check")
    min_body_rate: int = Field(default=1024, ge=1, description="body bytes/s, per window")
    idle_timeout_s: int = Field(default=30, ge=1, le=3600,
                                description="keep-alive: idle time between two requests")
    max_buffered_bytes: int = Field(default=256 * MIB, ge=1024,
                                    description="JSON bodies held at once, all requests (429)")
    previews_per_pair_per_day: int = Field(
        default=10, ge=1, le=10_000,
        description="match previews one pair of parties may open in a room per 24 hours (429)")

    @model_validator(mode="before")
    @classmethod
    def _audience_alias(cls, data: object) -> object:
        # SEALROOM_AUDIENCE (deprecated) is read as the public origin when none is given
        if isinstance(data, dict) and data.get("audience") is not None:
            data = dict(data)
            audience = data.pop("audience")
            if data.get("public_origin") is None:
                data["public_origin"] = audience
        return data

    @field_validator("public_origin")
    @classmethod
    def _origin(cls, value: str | None) -> str | None:
        # a ConfigError (not a ValueError) so that it reaches the operator as E_CONFIG
        if value is None:
            return None
        try:
            return public_origin(value, "SEALROOM_PUBLIC_ORIGIN / --public-origin")
        except InputError as exc:
            raise ConfigError(exc.message) from exc

    @property
    def origin(self) -> str | None:
        """The audience parties sign: the public origin, or :data:`DEV_ORIGIN` in development
        when none is configured; None when the coordinator must not start."""
        if self.public_origin is not None:
            return self.public_origin
        return DEV_ORIGIN if self.dev else None

    @property
    def db_url(self) -> str:
        """The effective database URL."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'sealroom.db').resolve()}"

    @property
    def platform_key_file(self) -> Path:
        """The effective path of the platform secret."""
        return self.platform_key_path or (self.data_dir / "platform.key")

    def admin_secret(self) -> str | None:
        """The admin token as text, or None when operator routes are disabled."""
        if self.admin_token is None:
            return None
        value = self.admin_token.get_secret_value()
        return value or None
