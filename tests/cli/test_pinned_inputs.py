"""Approvals pin data, and every join measures its match rate (issue 10, items 3 and 4), through
real ``sealroom`` processes, a real coordinator process and the real worker entrypoint.

Upload v1, approve, upload v2, run: the run reads v1 and its receipt, ``result get`` and
``receipt verify`` say so. A ``follow_latest`` bundle reads v2 only once the dataset's owner
agreed to follow new uploads. The worker's measured match rate is in the receipt, equal to the
truth where no DP is declared, and in ``room status`` and ``/metrics``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from coordinator.cli.demo_data import generate
from tests.cli.conftest import fails, ok, sealroom
from tests.cli.test_flow import ADMIN, ROOM, Server, World, signed_room

BRAND, PUBLISHER, OVERLAP = 600, 750, 300


def _field(text: str, pattern: str) -> str:
    match = re.search(pattern, text)
    assert match, text
    return match.group(1)


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("pinned")
    (root / "coordinator").mkdir()
    server = Server(root / "coordinator")
    server.start()
    world = World(root, server)
    try:
        signed_room(world, allow_custom_code=False)
        data = generate(root / "data", brand_rows=BRAND, publisher_rows=PUBLISHER,
                        overlap=OVERLAP)
        out = ok(world.cli("brand", "data", "upload", str(data.brand_csv), "--dataset",
                           "customers")).out
        assert "version 1" in out
        ok(world.cli("publisher", "data", "upload", str(data.publisher_csv), "--dataset",
                     "visitors"))
        yield world
    finally:
        server.stop()


def _overlap(room: World, name: str, *extra: str) -> str:
    out = ok(room.cli("brand", "bundle", "new", "--template", "overlap", "--param",
                      "left=customers", "--param", "right=visitors", "--recipient", "brand",
                      "--title", name, "-o", str(room.root / f"{name}.json"), *extra)).out
    digest = _field(out, r"bundle ([0-9a-f]{64})")
    ok(room.cli("brand", "bundle", "submit", str(room.root / f"{name}.json")))
    room.bundles[name] = digest
    return out


def _receipt(room: World, run_id: str) -> dict[str, object]:
    path = room.home("brand") / "rooms" / ROOM / "receipts" / f"{run_id}.json"
    doc = json.loads(path.read_text())
    envelope = doc["receipt"]
    import base64

    payload = json.loads(base64.b64decode(envelope["payload"]))
    assert isinstance(payload, dict)
    return payload


def test_an_approval_pins_the_upload_a_run_reads(room: World) -> None:
    out = _overlap(room, "pinned")
    assert re.search(r"reads customers: version 1 \(upload [0-9a-f]{12}\)", out), out
    review = ok(room.cli("publisher", "bundle", "review", room.bundles["pinned"])).out
    assert re.search(rf"customers\s+version 1 \(upload [0-9a-f]{{12}}\): {BRAND} rows, "
                     r"one row per person \(checked by the worker\)\s+brand", review), review
    for party in ("brand", "publisher"):
        ok(room.cli(party, "bundle", "approve", "--yes", room.bundles["pinned"]))
    # a new upload after the approvals: v2, a smaller file, agreed with the coordinator
    v1 = (room.root / "data" / "customers.csv").read_text().splitlines()
    smaller = room.root / "customers-v2.csv"
    smaller.write_text("\n".join(v1[:401]) + "\n")
    sealed = ok(room.cli("brand", "data", "seal", str(smaller), "--dataset", "customers",
                         "-o", str(room.root / "customers-next"))).out
    assert "version 2 (the coordinator's next version)" in sealed, sealed
    out = ok(room.cli("brand", "data", "upload", str(smaller), "--dataset", "customers")).out
    assert "version 2: 400 rows" in out, out

    run = _field(ok(room.cli("brand", "run", room.bundles["pinned"])).out, r"\b(run-[0-9a-f]+)")
    room.runs["pinned"] = run
    got = ok(room.cli("brand", "result", "get", run)).out
    assert f"input customers: version 1, {BRAND} rows" in got, got
    assert f"input visitors: version 1, {PUBLISHER} rows" in got, got
    receipt = _receipt(room, run)
    inputs = {i["dataset"]: i for i in receipt["inputs"]}  # type: ignore[attr-defined]
    assert inputs["customers"]["version"] == 1 and inputs["customers"]["row_count"] == BRAND
    assert inputs["customers"]["follow_latest"] is False
    verified = ok(sealroom("receipt", "verify", str(room.home("brand") / "rooms" / ROOM /
                                                    "receipts" / f"{run}.json"),
                           "--manifest", str(room.root / "room.manifest.json"))).out
    assert f"input customers: version 1, {BRAND} rows" in verified, verified


def test_the_measured_match_rate_equals_the_truth_without_dp(room: World) -> None:
    receipt = _receipt(room, room.runs["pinned"])
    rates = {m["dataset"]: m for m in receipt["match"]}  # type: ignore[attr-defined]
    assert rates["customers"] == {"dataset": "customers", "party": "brand",
                                  "rate": f"{OVERLAP / BRAND:.4f}"}
    assert rates["visitors"]["rate"] == f"{OVERLAP / PUBLISHER:.4f}"
    status = ok(room.cli("publisher", "--room", ROOM, "room", "status")).out
    assert re.search(r"customers\s+brand\s+publisher\s+1\s+0\s+0\.5(000)?\s+0\.5", status), status
    metrics = httpx.get(f"{room.server.url}/metrics", timeout=10,
                        headers={"Authorization": f"Bearer {ADMIN}"}).text
    assert re.search(r'sealroom_match_rate\{dataset="visitors",partners="brand",party="publisher"'
                     r',room="brand-x-publisher"\} 0\.4\b', metrics), metrics


def test_follow_latest_needs_the_owners_word(room: World) -> None:
    out = _overlap(room, "standing", "--follow-latest", "customers")
    assert "reads customers: every new upload: runs will read versions uploaded after " \
           "approval" in out, out
    assert re.search(r"reads visitors: version 1", out), out
    digest = room.bundles["standing"]
    # the partner approves as usual; the owner must say --follow-latest
    ok(room.cli("publisher", "bundle", "approve", "--yes", digest))
    res = fails(room.cli("brand", "bundle", "approve", "--yes", digest), "E_INPUT", 2)
    assert "--follow-latest" in res.err
    fails(room.cli("brand", "run", digest), "E_SIGNATURE", 3)
    fails(room.cli("publisher", "bundle", "approve", "--yes", "--follow-latest", digest),
          "E_INPUT", 2)  # not the owner of a followed dataset
    ok(room.cli("brand", "bundle", "approve", "--yes", "--follow-latest", digest))
    run = _field(ok(room.cli("brand", "run", digest)).out, r"\b(run-[0-9a-f]+)")
    got = ok(room.cli("brand", "result", "get", run)).out
    assert "input customers: version 2, 400 rows" in got and "the bundle follows it" in got, got
    receipt = _receipt(room, run)
    inputs = {i["dataset"]: i for i in receipt["inputs"]}  # type: ignore[attr-defined]
    assert inputs["customers"]["version"] == 2 and inputs["customers"]["follow_latest"] is True


def test_a_bundle_cannot_pin_what_is_not_uploaded(room: World, tmp_path: Path) -> None:
    res = fails(room.cli("brand", "bundle", "new", "--template", "overlap", "--param",
                         "left=customers", "--param", "right=visitors", "--input",
                         "customers@9", "-o", str(tmp_path / "b.json")), "E_INPUT", 2)
    assert "version 9 of 'customers'" in res.err
    assert not (tmp_path / "b.json").exists()
