"""Run the coordinator under uvicorn: ``serve(data_dir, host, port, ...)``.

``sealroom coordinator serve --data-dir DIR`` calls :func:`serve`; ``python -m
coordinator.serve --data-dir DIR`` does the same. Other settings come from ``SEALROOM_*``
environment variables; keyword arguments override them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from coordinator.launchers.base import Launcher
from coordinator.settings import Settings


def serve(data_dir: Path | str, host: str = "127.0.0.1", port: int = 8600, *,
          worker_launcher: Launcher | None = None, log_level: str = "info",
          **overrides: Any) -> None:
    """Serve the coordinator until interrupted. ``overrides`` are settings fields (e.g.
    ``launcher="process"``); ``worker_launcher`` replaces the launcher they name (tests).

    Raises ``pydantic.ValidationError`` for invalid settings.
    """
    import uvicorn

    from coordinator.app import create_app

    settings = Settings(data_dir=Path(data_dir), **overrides)
    app = create_app(settings, worker_launcher)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False,
                timeout_keep_alive=30, h11_max_incomplete_event_size=64 * 1024)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m coordinator.serve --data-dir DIR [--host H] [--port P]``."""
    parser = argparse.ArgumentParser(prog="python -m coordinator.serve")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8600)
    parser.add_argument("--launcher", choices=("docker", "process"))
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    overrides = {"launcher": args.launcher} if args.launcher else {}
    serve(args.data_dir, args.host, args.port, log_level=args.log_level, **overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
