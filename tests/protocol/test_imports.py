"""The protocol core stays light: verifying a receipt imports no enclave, coordinator or data
stack (only the standard library, cryptography and PyNaCl)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "pandas",
    "numpy",
    "pyarrow",
    "duckdb",
    "opendp",
    "RestrictedPython",
    "fastapi",
    "starlette",
    "uvicorn",
    "pydantic",
    "sqlalchemy",
    "psycopg",
    "docker",
    "httpx",
    "enclave",
    "coordinator",
}
ALLOWED_THIRD_PARTY = {"cryptography", "nacl", "cffi", "_cffi_backend"}

# verifies the committed golden receipt, then reports every imported top-level module
CHILD = """
import json, sys
from datetime import datetime, timezone
from pathlib import Path
import sdk.protocol.verify as v
from sdk.protocol.dsse import Envelope

g = Path("tests/fixtures/golden")
env = lambda n: Envelope.from_json((g / n).read_bytes())
manifest = v.verify_manifest(env("manifest.json"), now=datetime(2026, 1, 2, tzinfo=timezone.utc))
tree = json.loads((g / "merkle.json").read_text())
entries = [Envelope.from_dict(e) for e in json.loads((g / "log-entries.json").read_text())]
v.verify_receipt(
    env("receipt.json"),
    manifest,
    [env("attestation.json")],
    log_entry=entries[tree["inclusion"]["index"]],
    inclusion=[bytes.fromhex(p) for p in tree["inclusion"]["proof"]],
)
import sdk.protocol, sdk.protocol.sealing, sdk.errors
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def test_verifying_a_receipt_imports_nothing_heavy() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    modules = set(json.loads(proc.stdout))
    assert not modules & FORBIDDEN, modules & FORBIDDEN
    stdlib = set(sys.stdlib_module_names) | {"sdk", "__main__", "builtins"}
    third_party = {m for m in modules if m not in stdlib and not m.startswith("_")}
    assert third_party <= ALLOWED_THIRD_PARTY, third_party - ALLOWED_THIRD_PARTY
