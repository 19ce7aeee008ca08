"""The worker's entrypoint: ``python -m enclave provision|run|measure``.

Writes exactly one document to stdout and nothing else; stderr carries no data. Exit code 0
whenever a result document was written (its ``status`` says how the run ended), 2 on usage
errors.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from pathlib import Path

from enclave.job import Job, error_code_of
from enclave.jobdir import read_secret
from enclave.measure import code_digest
from enclave.worker_keys import WorkerKeys, make_attestation, seal_worker_keys
from sdk.protocol import jobdir as layout
from sdk.protocol.canonical import canonical_json
from sdk.protocol.models import Measurement


def _write(document: object) -> None:
    data = canonical_json(document)
    out = sys.stdout.buffer
    out.write(data)
    out.flush()


def _provision(args: argparse.Namespace) -> dict[str, object]:
    measurement = Measurement(image_id=args.image_id, code_digest=code_digest())
    try:
        platform = read_secret(Path(args.job), layout.PLATFORM_KEY_SECRET)
        if len(platform) != 32:
            raise ValueError("platform secret must be 32 bytes")
        keys = WorkerKeys.generate()
        attestation = make_attestation(keys, platform, measurement, args.isolation)
        sealed = seal_worker_keys(keys, platform, measurement)
    except Exception as exc:
        return {"status": "failed", "error_code": error_code_of(exc)}
    return {
        "status": "succeeded",
        "attestation": attestation.to_dict(),
        "sealed_worker_key": base64.b64encode(sealed).decode("ascii"),
    }


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run one command, print its document."""
    parser = argparse.ArgumentParser(prog="python -m enclave", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("provision", "run"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--job", required=True, help="the job directory")
        cmd.add_argument("--image-id", required=True, help="the image id the launcher started")
        cmd.add_argument("--isolation", choices=("container", "none"), required=True)
    sub.add_parser("measure", help="print the code digest of this worker")
    args = parser.parse_args(argv)
    os.umask(0o077)
    if args.command == "measure":
        _write({"code_digest": code_digest()})
    elif args.command == "provision":
        _write(_provision(args))
    else:
        _write(Job(Path(args.job), image_id=args.image_id, isolation=args.isolation).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
