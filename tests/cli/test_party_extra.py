"""Installing only the ``party`` extra is enough to create, review and approve a template
bundle (issue 15): a fresh Python process runs ``bundle new --template``, ``bundle submit``,
``bundle review`` and ``bundle approve`` through :func:`sdk.cli.run_command` against a real
coordinator, then reports every module it imported; none of pandas, DuckDB or OpenDP (nor the
enclave's RestrictedPython, nor the coordinator's service dependencies) may be among them.

The room is set up first as a party and the operator would: ``worker provision`` against the
running coordinator with the admin token, keys, the room signed by both parties. No data is
uploaded: reviewing and approving do not need it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.cli.demo import room_toml
from tests.cli.conftest import REPO, CoordinatorProcess, ok, sealroom
from tests.cli.test_flow import provisioned

ADMIN = "party-extra-admin-token-0123456789"
ROOM = "brand-x-publisher"
# distributions the party extra does not bring in (their import names)
NOT_IN_THE_PARTY_EXTRA = ("pandas", "duckdb", "opendp", "RestrictedPython", "fastapi",
                          "starlette", "uvicorn", "sqlalchemy", "pydantic", "pydantic_settings",
                          "docker", "psycopg")

CHILD = r"""
import io, json, re, sys

from sdk.cli import run_command

url, brand, publisher, bundle_file = sys.argv[1:5]
outputs = {}


def call(name, home, *argv):
    out, err = io.StringIO(), io.StringIO()
    code = run_command(["--home", home, "--coordinator", url, *argv], out=out, err=err)
    if code != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {code}\n{err.getvalue()}")
    outputs[name] = out.getvalue()
    return out.getvalue()


text = call("new", brand, "bundle", "new", "--template", "overlap", "--param", "left=customers",
            "--param", "right=visitors", "--recipient", "brand", "--recipient", "publisher",
            "--follow-latest", "customers", "--follow-latest", "visitors", "-o", bundle_file)
digest = re.search(r"bundle ([0-9a-f]{64})", text).group(1)
call("submit", brand, "bundle", "submit", bundle_file)
call("review", publisher, "bundle", "review", digest)
call("approve publisher", publisher, "bundle", "approve", "--yes", "--follow-latest", digest)
call("approve brand", brand, "bundle", "approve", "--yes", "--follow-latest", digest)
call("review after", brand, "bundle", "review", digest, "--no-code")
print(json.dumps({"digest": digest, "outputs": outputs, "modules": sorted(sys.modules)}))
"""


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    root = tmp_path_factory.mktemp("party-extra")
    server = CoordinatorProcess(root / "coordinator", ADMIN).start()
    try:
        prov = ok(sealroom("--coordinator", server.url, "worker", "provision",
                           env={"SEALROOM_ADMIN_TOKEN": ADMIN}))
        platform, image, code = provisioned(prov.out)

        def cli(who: str, *args: str) -> None:
            ok(sealroom("--coordinator", server.url, *args, home=root / who))

        for party in ("brand", "publisher"):
            cli(party, "keys", "new", party)
        (root / "room.toml").write_text(room_toml(
            root / "brand" / "keys" / "brand.pub", root / "publisher" / "keys" / "publisher.pub",
            platform, image, code, unisolated=True))
        manifest = str(root / "room.json")
        cli("brand", "room", "new", str(root / "room.toml"), "-o", manifest)
        cli("brand", "room", "sign", manifest)
        cli("brand", "room", "submit", manifest)
        cli("publisher", "room", "sign", "--room", ROOM)
        cli("brand", "room", "verify", "--room", ROOM)
        yield root, server.url
    finally:
        server.stop()


def test_template_bundle_lifecycle_needs_only_the_party_extra(room: tuple[Path, str]) -> None:
    root, url = room
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALROOM_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, url, str(root / "brand"), str(root / "publisher"),
         str(root / "overlap.json")],
        capture_output=True, text=True, env=env, cwd=root, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    outputs = report["outputs"]
    assert "template overlap (plan regenerated and identical)" in outputs["review"]
    assert "publisher approved bundle" in outputs["approve publisher"]
    assert "brand approved bundle" in outputs["approve brand"]
    decisions = dict(re.findall(r"^(brand|publisher)\s+(\S.*?)\s*$", outputs["review after"],
                                flags=re.M))
    assert set(decisions) == {"brand", "publisher"}, outputs["review after"]
    assert all(d.startswith("approved") for d in decisions.values()), outputs["review after"]

    modules = set(report["modules"])
    assert "sdk.cli" in modules  # it did run the CLI in that process
    imported = sorted(m for m in modules if m.split(".")[0] in NOT_IN_THE_PARTY_EXTRA)
    assert not imported, f"a party's template bundle imported {imported}"
