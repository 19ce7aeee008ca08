"""Upload throughput and server memory: a sealed file streamed over loopback to a real
coordinator process.

Starts ``python -m coordinator.serve`` (process launcher, SQLite) in a temp data dir, provisions
the real worker, signs a two-party room, seals a 100 MB and a 1 GB file to the worker's key,
and uploads each with the SDK client (statement, then the streamed body). Prints MB/s per
upload and the server's peak RSS (``VmHWM`` of ``/proc/<pid>/status``) after each: a flat
figure means memory does not grow with the upload's size.

Usage: ``python bench/upload.py [--sizes-mb 100,1024] [--keep]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sdk.client import Client  # noqa: E402
from sdk.party.statements import sign_manifest  # noqa: E402
from sdk.protocol.clock import format_time  # noqa: E402
from sdk.protocol.dsse import sign_envelope  # noqa: E402
from sdk.protocol.keys import PartyKey, Signer  # noqa: E402
from sdk.protocol.models import Manifest, Upload  # noqa: E402
from sdk.protocol.sealing import seal_stream, upload_binding  # noqa: E402

ADMIN = "bench-admin"
MB = 1_000_000


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _vm(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _manifest(alice: PartyKey, bob: PartyKey, platform: bytes, attestation: dict) -> Manifest:
    def party(k: PartyKey) -> dict:
        return {**k.identity.to_dict(), "roles": ["data_owner", "analyst", "recipient"]}

    dataset = {"schema": [{"name": "uid", "type": "string"}], "id_column": "uid",
               "id_kind": "sha256", "min_group_size": 5, "epsilon_budget": "10"}
    return Manifest.from_dict({
        "room_id": "bench", "version": 1, "parties": [party(alice), party(bob)],
        "datasets": [{"name": f"d{i}", "owner": "alice", **dataset} for i in range(8)],
        "workers": {"measurements": [attestation["measurement"]], "providers": ["simulated"],
                    "platform_keys": [Signer.from_seed(platform).public_key.hex()],
                    "allow_unisolated": True},
        "policies": {"min_group_size": 5, "max_runs": 10}, "expires": "2099-01-01T00:00:00Z"})


def _seal(path: Path, size: int, worker_key: bytes, digest: str, dataset: str) -> object:
    block = os.urandom(1 << 20)
    plain = path.with_suffix(".plain")
    with open(plain, "wb") as out:
        left = size
        while left > 0:
            out.write(block[: min(left, len(block))])
            left -= len(block)
    with open(plain, "rb") as src, open(path, "wb") as dst:
        result = seal_stream(src, dst, worker_key, upload_binding("bench", digest, dataset, 1))
    plain.unlink()
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes-mb", default="100,1000")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sealroom-bench-upload-"))
    data = root / "data"
    port = _port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SEALROOM_ADMIN_TOKEN": ADMIN, "SEALROOM_LAUNCHER": "process"}
    server = subprocess.Popen(
        [sys.executable, "-m", "coordinator.serve", "--data-dir", str(data), "--port",
         str(port), "--log-level", "warning", "--public-origin", url], cwd=REPO, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        admin = Client(url, admin_token=ADMIN)
        attestation_env = admin.provision_worker()
        import json

        attestation = json.loads(attestation_env.payload)
        alice = PartyKey.generate("alice")
        bob = PartyKey.generate("bob")
        platform = (data / "platform.key").read_bytes()
        manifest = _manifest(alice, bob, platform, attestation)
        envelope = sign_manifest(sign_manifest(manifest, alice), bob)
        client = Client(url, alice, timeout=600)
        client.submit_manifest(envelope)
        worker_key = bytes.fromhex(attestation["worker_encryption_key"])
        base_rss = _vm(server.pid, "VmHWM")
        print(f"server idle peak RSS: {base_rss / MB:.1f} MB")
        print(f"{'size':>10} {'client':>7} {'seal s':>7} {'upload s':>9} {'MB/s':>8} "
              f"{'server peak RSS':>16}")
        for i, size_mb in enumerate(int(x) for x in args.sizes_mb.split(",")):
            sealed = root / f"d{i}.sealed"
            started = time.perf_counter()
            result = _seal(sealed, size_mb * MB, worker_key, envelope.digest(), f"d{i}")
            seal_s = time.perf_counter() - started
            for tool, dataset in (("sdk", f"d{2 * i}"), ("curl", f"d{2 * i + 1}")):
                upload = Upload("bench", envelope.digest(), dataset, 1,
                                manifest.dataset(dataset).schema_digest(), 1,
                                result.ciphertext_digest, result.ciphertext_size,  # type: ignore[attr-defined]
                                result.key_commitment, attestation_env.digest(),  # type: ignore[attr-defined]
                                format_time(datetime.now(UTC)))
                statement = sign_envelope(Upload.KIND, upload.to_dict(), [alice.signer])
                info = client.upload_statement("bench", statement)
                token = client.authenticate()
                target = f"{url}/v1/rooms/bench/uploads/{info['digest']}/data"
                started = time.perf_counter()
                if tool == "sdk":
                    done = client.upload_data("bench", str(info["digest"]), sealed)
                else:
                    out = subprocess.run(
                        ["curl", "-sS", "-X", "PUT", "-T", str(sealed), "-H",
                         f"Authorization: Bearer {token}", "-H",
                         "Content-Type: application/octet-stream", "-H", "Expect:", target],
                        capture_output=True, check=True)
                    done = json.loads(out.stdout)
                elapsed = time.perf_counter() - started
                assert done["complete"], done
                size = sealed.stat().st_size
                stored = data / "blobs" / done["ciphertext_digest"][:2] / done["ciphertext_digest"]
                assert stored.stat().st_size == size
                rss = _vm(server.pid, "VmHWM")
                print(f"{size / MB:>8.0f}MB {tool:>7} {seal_s:>7.2f} {elapsed:>9.2f} "
                      f"{size / MB / elapsed:>8.1f} {rss / MB:>13.1f} MB", flush=True)
                stored.unlink()
            sealed.unlink()
    finally:
        server.terminate()
        server.wait(timeout=30)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
