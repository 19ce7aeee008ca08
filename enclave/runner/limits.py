"""Resource limits of one runner process."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

TABLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}")
"""Names tables may have in a runner (checked by the supervisor and again by the child)."""
GIB = 1 << 30
MIB = 1 << 20


@dataclasses.dataclass(frozen=True, slots=True)
class RunnerLimits:
    """Hard limits applied to one query run.

    ``cpu_seconds`` becomes RLIMIT_CPU of the runner (all its threads together); ``wall_seconds``
    is enforced by the parent, which kills the runner's process group at the deadline (the
    deadline covers start-up and the hand-over of the input); ``memory_bytes`` becomes RLIMIT_AS
    (address space, which is larger than resident memory: leave headroom for the interpreter,
    about 0.4 GiB) and DuckDB's ``memory_limit`` is a share of it (``sqlengine.buffer_bytes``:
    half, up to three quarters for a plan grouping by no person); ``max_output_bytes`` caps the
    Arrow IPC result and ``max_output_rows`` its rows; ``threads`` sizes the Arrow and DuckDB
    thread pools. ``max_input_rows`` and ``max_input_columns`` cap each input table (checked
    from the Parquet footer before decoding). ``spill_bytes`` (default 0: none) lets a *plan*
    run's DuckDB spill up to that many bytes into the runner's working directory (the operator
    points ``TMPDIR`` at an encrypted, ephemeral volume); custom code never gets it.
    """

    cpu_seconds: float = 60.0
    wall_seconds: float = 120.0
    memory_bytes: int = 4 * GIB
    max_output_bytes: int = 512 * MIB
    max_output_rows: int = 50_000_000
    threads: int = 2
    max_input_rows: int = 200_000_000
    max_input_columns: int = 1_000
    spill_bytes: int = 0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"RunnerLimits.{field.name} must be a number")
            floor_ok = value >= 0 if field.name == "spill_bytes" else value > 0
            if not math.isfinite(value) or not floor_ok:
                raise ValueError(f"RunnerLimits.{field.name} must be positive and finite")
        for name in ("memory_bytes", "max_output_bytes", "max_output_rows", "threads",
                     "max_input_rows", "max_input_columns", "spill_bytes"):
            if not isinstance(getattr(self, name), int):
                raise TypeError(f"RunnerLimits.{name} must be an integer")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (round-trips through :meth:`from_json`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunnerLimits:
        """Build limits from :meth:`to_json` output; unknown keys raise ``TypeError``."""
        return cls(**dict(data))
