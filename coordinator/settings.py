"""Coordinator settings, read from ``SEALROOM_*`` environment variables (pydantic-settings).

Everything has a safe default for a single-host development setup: SQLite in ``data_dir``, the
process launcher off (Docker by default), no admin token (operator routes disabled).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

GIB = 1024**3
MIB = 1024**2


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
    audience: str | None = Field(
        default=None,
        description="what parties sign when they authenticate; default: the request's base URL",
    )
    max_upload_bytes: int = Field(default=64 * GIB, ge=1, description="cap of one sealed upload")
    max_json_bytes: int = Field(default=16 * MIB, ge=1024, description="cap of any JSON body")
    max_result_bytes: int = Field(default=256 * MIB, ge=1024, description="cap of a worker result")
    run_concurrency: int = Field(default=2, ge=1, le=64, description="runs executed at once")
    run_deadline_s: float = Field(default=600.0, gt=0, description="wall-clock limit of a run")
    launcher: Literal["docker", "process"] = "docker"
    worker_image: str = "sealroom-worker:latest"
    instance: str = Field(default="default", description="label of this coordinator's containers")
    platform_key_path: Path | None = Field(
        default=None, description="the 32-byte platform secret; default <data_dir>/platform.key"
    )
    provision_on_start: bool = Field(
        default=False, description="provision a worker at start-up when none is provisioned"
    )
    poll_interval_s: float = Field(default=0.5, gt=0, le=60, description="run queue polling")

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
