"""A coordinator server process for tests: ``python -m tests.coordinator.server_main
--data-dir D --port P [--mode ok|hang] [--real]`` (fake worker unless ``--real``)."""

from __future__ import annotations

import argparse

from coordinator.serve import serve
from tests.coordinator.conftest import ADMIN
from tests.coordinator.fake import FakeLauncher


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", default="ok")
    parser.add_argument("--real", action="store_true")
    args = parser.parse_args()
    launcher = None if args.real else FakeLauncher(args.mode)
    serve(args.data_dir, "127.0.0.1", args.port, worker_launcher=launcher, log_level="warning",
          admin_token=ADMIN, launcher="process", poll_interval_s=0.05,
          public_origin=f"http://127.0.0.1:{args.port}")


if __name__ == "__main__":
    main()
