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
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any


class _NoPandas:
    """pandas is never used by the worker; pyarrow would import it (0.5 s) on first use."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if name.split(".", 1)[0] == "pandas":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoPandas)


def _early_runner() -> object:
    """For ``run``: start the keyless runner before this process imports the supervisor, so
    both load their modules at the same time (see :func:`enclave.job.start_runner`)."""
    if len(sys.argv) > 3 and sys.argv[1] == "run" and "--job" in sys.argv:
        job = sys.argv[sys.argv.index("--job") + 1]
        from enclave.resources import start_runner

        return start_runner(Path(job))
    return None



def _write(document: object) -> None:
    from sdk.protocol.canonical import canonical_json

    data = canonical_json(document)
    out = sys.stdout.buffer
    out.write(data)
    out.flush()


def _provision(args: argparse.Namespace) -> dict[str, object]:
    from enclave.job import error_code_of
    from enclave.jobdir import read_secret
    from enclave.measure import code_digest
    from enclave.worker_keys import (
        WorkerKeys,
        make_attestation,
        make_hardware_attestation,
        seal_worker_keys,
    )
    from sdk.protocol import jobdir as layout
    from sdk.protocol.models import Measurement

    measurement = Measurement(image_id=args.image_id, code_digest=code_digest())
    try:
        platform = read_secret(Path(args.job), layout.PLATFORM_KEY_SECRET)
        if len(platform) != 32:
            raise ValueError("platform secret must be 32 bytes")
        keys = WorkerKeys.generate()
        if args.provider == "simulated":
            attestation = make_attestation(keys, platform, measurement, args.isolation)
        else:
            from enclave.evidence import collect_evidence

            attestation = make_hardware_attestation(
                keys, args.provider, measurement, args.isolation, collect_evidence
            )
        sealed = seal_worker_keys(keys, platform, measurement)
    except Exception as exc:
        return {"status": "failed", "error_code": error_code_of(exc)}
    return {
        "status": "succeeded",
        "attestation": attestation.to_dict(),
        "sealed_worker_key": base64.b64encode(sealed).decode("ascii"),
    }


def main(argv: list[str] | None = None, runner: Any = None) -> int:
    """Parse arguments, run one command, print its document (``runner``: one started early,
    for ``run``)."""
    parser = argparse.ArgumentParser(prog="python -m enclave", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("provision", "run"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--job", required=True, help="the job directory")
        cmd.add_argument("--image-id", required=True, help="the image id the launcher started")
        cmd.add_argument("--isolation", choices=("container", "none"), required=True)
    sub.choices["run"].add_argument(
        "--wait-for-go", action="store_true",
        help="started ahead of the job: load everything, then wait for the launcher's go file")
    sub.choices["provision"].add_argument(
        "--provider",
        choices=("simulated", "aws-nitro", "amd-sev-snp", "intel-tdx"),
        default="simulated",
        help="who attests the keys: the platform key, or the TEE this worker runs in",
    )
    sub.add_parser("measure", help="print the code digest of this worker")
    args = parser.parse_args(argv)
    os.umask(0o077)
    from enclave.job import Job
    from enclave.measure import code_digest

    if args.command == "measure":
        _write({"code_digest": code_digest()})
    elif args.command == "provision":
        _write(_provision(args))
    else:
        if args.wait_for_go:
            from enclave.warm import wait_for_go

            if not wait_for_go(Path(args.job), runner):
                from enclave.job import failure_document

                _write(failure_document("E_INTERNAL"))
                return 0
        _write(Job(Path(args.job), image_id=args.image_id, isolation=args.isolation,
                   runner=runner).run())
    return 0


if __name__ == "__main__":
    sys.exit(main(runner=_early_runner()))
