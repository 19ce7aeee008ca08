"""Runs through the real enclave job path: verify → decrypt → keyless runner → privacy → seal →
receipt, with SQL, Python and template bundles; budget, max runs, charges on failure, and
canaries that must never leave."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from sdk.protocol import merkle
from sdk.protocol.canonical import parse_json
from sdk.protocol.dsse import Envelope
from sdk.protocol.sealing import open_bytes
from sdk.protocol.templates import build
from sdk.protocol.verify import log_leaf_hashes, verify_receipt
from tests.kit import CANARY, Room, demo_tables

SQL = "SELECT c.uid, v.exposed, c.converted FROM crm c JOIN visits v USING (uid)"
AGG = {
    "mode": "aggregate",
    "privacy_unit": "uid",
    "group_by": [{"column": "exposed", "domain": ["0", "1"]}],
    "measures": [{"name": "conv", "column": "converted", "agg": "sum", "lower": "0", "upper": "1"}],
}
PY = """
def query(tables, params):
    c = tables["crm"].select("uid", "converted")
    v = tables["visits"].select("uid", "exposed")
    return c.join(v, on="uid")
"""


@pytest.fixture()
def room(tmp_path: Path) -> Room:
    r = Room(tmp_path / "room", epsilon_budget="3")
    crm, visits = demo_tables()
    r.upload(r.alice, "crm", crm)
    r.upload(r.bob, "visits", visits)
    return r


def receipt_of(doc: dict[str, Any]) -> dict[str, Any]:
    return json.loads(Envelope.from_dict(doc["receipt"]).payload)


def output_of(room: Room, doc: dict[str, Any], who: str = "alice") -> dict[str, Any]:
    key = room.alice if who == "alice" else room.bob
    plain = open_bytes(base64.b64decode(doc["outputs"][who]), key.encryption_private)
    parsed = parse_json(plain)
    assert isinstance(parsed, dict)
    return parsed


def rows_by(output: dict[str, Any], key: str) -> dict[Any, dict[str, Any]]:
    cols = output["columns"]
    return {dict(zip(cols, r))[key]: dict(zip(cols, r)) for r in output["rows"]}


def no_canary(doc: dict[str, Any], room: Room) -> None:
    text = json.dumps(doc)
    assert CANARY not in text
    for who in doc["outputs"]:
        assert CANARY not in json.dumps(output_of(room, doc, who))


def verify_offline(room: Room, doc: dict[str, Any]) -> None:
    entries = [Envelope.from_dict(e) for e in room.log_entries]
    index = receipt_of(doc)["log_index"]
    outputs = {k: base64.b64decode(v) for k, v in doc["outputs"].items()}
    verify_receipt(
        Envelope.from_dict(doc["receipt"]),
        room.manifest,
        [room.attestation],
        log_entry=entries[index],
        inclusion=merkle.inclusion_proof(log_leaf_hashes(entries), index),
        outputs=outputs,
    )


def test_sql_bundle_exact_counts_without_dp(room: Room) -> None:
    bundle = room.bundle(SQL, AGG)
    doc = room.run(room.job_dir(bundle, room.approvals(bundle)))
    assert doc["status"] == "succeeded", doc["error_code"]
    out = rows_by(output_of(room, doc), "exposed")
    # demo_tables: visits overlap crm on 200 users, exposed alternates
    assert out["0"]["n_units"] + out["1"]["n_units"] == 200
    verify_offline(room, doc)
    no_canary(doc, room)


def test_python_bundle_same_answer(room: Room) -> None:
    b_sql = room.bundle(SQL, AGG)
    b_py = room.bundle(PY, AGG, kind="python")
    out_sql = output_of(room, room.run(room.job_dir(b_sql, room.approvals(b_sql))))
    doc = room.run(room.job_dir(b_py, room.approvals(b_py)))
    assert doc["status"] == "succeeded", doc["error_code"]
    assert output_of(room, doc)["rows"] == out_sql["rows"]


def test_query_that_returns_raw_rows_is_still_aggregated(room: Room) -> None:  # T17
    code = "SELECT c.uid, v.exposed, c.converted, c.note FROM crm c JOIN visits v USING (uid)"
    doc = room.run(room.job_dir(b := room.bundle(code, AGG), room.approvals(b)))
    assert doc["status"] == "succeeded"
    assert output_of(room, doc)["columns"] == ["exposed", "n_units", "conv"]
    no_canary(doc, room)


def test_query_error_reaches_the_receipt_as_a_code_only(room: Room) -> None:
    code = "SELECT c.uid, v.exposed, 1/0 AS converted, CAST(c.note AS INTEGER) AS x FROM crm c JOIN visits v USING (uid)"
    doc = room.run(room.job_dir(b := room.bundle(code, AGG), room.approvals(b)))
    assert doc["status"] == "failed" and doc["error_code"] == "E_QUERY_RUNTIME"
    assert doc["outputs"] == {}
    no_canary(doc, room)


def test_python_escape_is_rejected_and_charged(room: Room) -> None:
    code = "def query(tables, params):\n    return ().__class__.__base__.__subclasses__()\n"
    spec = {**AGG, "dp": {"epsilon": "1"}}
    doc = room.run(room.job_dir(b := room.bundle(code, spec, kind="python"), room.approvals(b)))
    assert doc["error_code"] == "E_QUERY_REJECTED"
    # a run that fails after the charge is charged
    assert [i["dataset"] for i in receipt_of(doc)["inputs"]] == ["crm", "visits"]
    kinds = [json.loads(Envelope.from_dict(e).payload)["kind"] for e in doc["log_entries"]]
    assert kinds.count("budget_charged") == 2


def test_budget_exhaustion_refuses_before_decryption(room: Room) -> None:  # T45
    spec = {**AGG, "dp": {"epsilon": "1"}}
    bundle = room.bundle(SQL, spec)
    for _ in range(3):
        assert room.run(room.job_dir(bundle, room.approvals(bundle)))["status"] == "succeeded"
    doc = room.run(room.job_dir(bundle, room.approvals(bundle)))
    assert doc["status"] == "refused" and doc["error_code"] == "E_PRIVACY"
    assert "decrypt" not in receipt_of(doc)["timings_ms"]
    verify_offline(room, doc)


def test_each_run_of_the_same_query_is_charged(room: Room) -> None:  # T42 / T44
    spec = {**AGG, "dp": {"epsilon": "0.5"}}
    bundle = room.bundle(SQL, spec)
    lefts = []
    for _ in range(3):
        doc = room.run(room.job_dir(bundle, room.approvals(bundle)))
        lefts.append(receipt_of(doc)["privacy"]["budget_left"]["crm"])
    assert lefts == ["2.5", "2.0", "1.5"]


def test_max_runs(room: Room) -> None:
    bundle = room.bundle(SQL, AGG, max_runs=1)
    assert room.run(room.job_dir(bundle, room.approvals(bundle)))["status"] == "succeeded"
    doc = room.run(room.job_dir(bundle, room.approvals(bundle)))
    assert doc["status"] == "refused" and doc["error_code"] == "E_PRIVACY"


def test_small_groups_are_suppressed(tmp_path: Path) -> None:  # T40
    room = Room(tmp_path / "room", min_group_size=150)
    crm, visits = demo_tables()
    room.upload(room.alice, "crm", crm)
    room.upload(room.bob, "visits", visits)
    doc = room.run(room.job_dir(b := room.bundle(SQL, AGG), room.approvals(b)))
    out = output_of(room, doc)
    assert "suppressed_groups" not in receipt_of(doc)["privacy"]  # an exact count: one bit
    assert all(r[1] is None for r in out["rows"]) or out["rows"] == []


def test_incrementality_template(room: Room) -> None:
    params = {
        "exposure": "visits",
        "exposure_id": "uid",
        "conversions": "crm",
        "conversion_id": "uid",
        "epsilon": "1",
    }
    t = build("incrementality", params)
    bundle = room.bundle(
        t.code, t.output.to_dict(), kind="template", template="incrementality", params=params,
        plan=t.plan, inputs=t.plan.inputs,
    )
    doc = room.run(room.job_dir(bundle, room.approvals(bundle)))
    assert doc["status"] == "succeeded", doc["error_code"]
    out = output_of(room, doc)
    assert "figure" in out["columns"]
    verify_offline(room, doc)


def test_template_bundle_with_edited_code_is_refused(room: Room) -> None:
    params = {"left": "crm", "right": "visits", "left_id": "uid", "right_id": "uid"}
    t = build("overlap", params)
    bundle = room.bundle(
        t.code + " -- edited",
        t.output.to_dict(),
        kind="template",
        template="overlap",
        params=params,
        plan=t.plan,
    )
    doc = room.run(room.job_dir(bundle, room.approvals(bundle)))
    assert doc["status"] == "refused" and doc["error_code"] == "E_INPUT"


def test_swapped_ciphertext_fails_opaquely(room: Room) -> None:  # T61 / T62
    bundle = room.bundle(SQL, AGG)
    job = room.job_dir(bundle, room.approvals(bundle))
    target = next((job / "data").iterdir())
    data = bytearray(target.read_bytes())
    data[-10] ^= 1
    target.unlink()
    target.write_bytes(bytes(data))
    doc = room.run(job)
    assert doc["status"] == "failed" and doc["error_code"] == "E_DECRYPT"
    assert doc["outputs"] == {}


def test_through_the_worker_entrypoint_subprocess(room: Room) -> None:
    bundle = room.bundle(SQL, AGG)
    doc = room.run(room.job_dir(bundle, room.approvals(bundle)), subprocess=True)
    assert doc["status"] == "succeeded"
    assert receipt_of(doc)["isolation"] == "none"
    verify_offline(room, doc)
