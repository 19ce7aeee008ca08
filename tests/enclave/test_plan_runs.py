"""Plan bundles through the worker (in process; the query runner is its own process): exact
figures against ground truth, DP, list releases, and the worker refusing what admission
refuses, as the verifier of record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sdk.protocol.dsse import Envelope
from sdk.protocol.plan import Call, Col, Join, Lit, Plan, PlanGroup, PlanMeasure
from sdk.protocol.templates import build
from tests.enclave.test_job_runs import no_canary, output_of, receipt_of, rows_by, verify_offline
from tests.kit import Room, demo_tables

COUNT = PlanMeasure("people", "count")


@pytest.fixture()
def room(tmp_path: Path) -> Room:
    r = Room(tmp_path / "room", epsilon_budget="5")
    crm, visits = demo_tables()
    r.upload(r.alice, "crm", crm)
    r.upload(r.bob, "visits", visits)
    return r


def by_segment() -> Plan:
    return Plan(("crm", "visits"), (Join("visits"),), None,
                (PlanGroup("segment", Col("visits", "segment"), ("a", "b")),),
                (COUNT, PlanMeasure("spend", "sum", Col("crm", "spend"), "0", "100")))


def truth() -> dict[str, tuple[int, float]]:
    crm, visits = demo_tables()
    spend = dict(zip(crm.column("uid").to_pylist(), crm.column("spend").to_pylist(), strict=True))
    out: dict[str, tuple[int, float]] = {}
    for uid, seg in zip(visits.column("uid").to_pylist(), visits.column("segment").to_pylist(),
                        strict=True):
        if uid in spend:
            n, s = out.get(seg, (0, 0.0))
            out[seg] = (n + 1, s + spend[uid])
    return out


def test_plan_gives_exact_figures_without_dp(room: Room) -> None:
    bundle = room.plan_bundle(by_segment())
    doc = room.run(room.job_dir(bundle, room.approvals(bundle)))
    assert doc["status"] == "succeeded", doc["error_code"]
    rows = rows_by(output_of(room, doc), "segment")
    for seg, (n, s) in truth().items():
        assert rows[seg]["people"] == n and float(rows[seg]["spend"]) == pytest.approx(s)
    receipt = receipt_of(doc)
    assert receipt["privacy"]["guarantee"] == "by construction"
    assert "suppressed_groups" not in json.dumps(receipt)
    assert all(v % 1000 == 0 for v in receipt["timings_ms"].values())
    no_canary(doc, room)
    verify_offline(room, doc)


def test_plan_with_dp_is_noised_and_charged(room: Room) -> None:
    bundle = room.plan_bundle(by_segment(), dp={"epsilon": "1"})
    doc = room.run(room.job_dir(bundle, room.approvals(bundle)))
    assert doc["status"] == "succeeded", doc["error_code"]
    out = output_of(room, doc)
    assert "OpenDP" in out["meta"]["mechanism"]
    assert receipt_of(doc)["privacy"]["epsilon_charged"] == "1"
    no_canary(doc, room)


def test_list_release_lists_only_the_recipients_ids(room: Room) -> None:
    plan = Plan(("crm", "visits"), (Join("visits"),),
                Call("eq", (Col("visits", "segment"), Lit("a"))), (), (), 1, "list")
    bundle = room.plan_bundle(plan)
    doc = room.run(room.job_dir(bundle, room.approvals(bundle)))
    assert doc["status"] == "succeeded", doc["error_code"]
    crm, visits = demo_tables()
    want = sorted(set(crm.column("uid").to_pylist()) & {
        u for u, s in zip(visits.column("uid").to_pylist(), visits.column("segment").to_pylist(),
                          strict=True) if s == "a"})
    assert [r[0] for r in output_of(room, doc)["rows"]] == want


def test_small_list_is_withheld_not_failed(room: Room) -> None:
    never = Call("eq", (Col("visits", "segment"), Lit("no such segment")))
    plan = Plan(("crm", "visits"), (Join("visits"),), never, (), (), 1, "list")
    bundle = room.plan_bundle(plan)
    doc = room.run(room.job_dir(bundle, room.approvals(bundle)))
    assert doc["status"] == "succeeded"
    out = output_of(room, doc)
    assert out["rows"] == [] and out["meta"]["withheld"]


def test_row_errors_become_null_not_a_failed_run(room: Room) -> None:
    # to_int('a') fails for every row: the group key is NULL, the run still succeeds
    plan = Plan(("crm", "visits"), (Join("visits"),), None,
                (PlanGroup("k", Call("to_int", (Col("visits", "segment"),)), None),),
                (COUNT, PlanMeasure("x", "sum", Call("div", (Col("crm", "spend"), Lit(0))),
                                    "0", "1")))
    bundle = room.plan_bundle(plan)
    doc = room.run(room.job_dir(bundle, room.approvals(bundle)))
    assert doc["status"] == "succeeded", doc["error_code"]


def test_worker_refuses_a_plan_outside_the_roles(room: Room) -> None:
    # signed without the SDK's check: the worker is the verifier of record
    plan = Plan(("crm", "visits"), (Join("visits"),), None,
                (PlanGroup("note", Col("crm", "note"), None),), (COUNT,))
    bundle = room.plan_bundle(plan)
    doc = room.run(room.job_dir(bundle, room.approvals(bundle)))
    assert doc["status"] == "refused" and doc["error_code"] == "E_QUERY_REJECTED"
    no_canary(doc, room)


def test_custom_code_needs_every_owner_to_allow_it(tmp_path: Path) -> None:
    room = Room(tmp_path / "closed", allow_custom_code=False)
    crm, visits = demo_tables()
    room.upload(room.alice, "crm", crm)
    room.upload(room.bob, "visits", visits)
    bundle = room.bundle("SELECT uid AS unit FROM crm", {"mode": "aggregate",
                                                         "privacy_unit": "unit"})
    doc = room.run(room.job_dir(bundle, room.approvals(bundle)))
    assert doc["status"] == "refused" and doc["error_code"] == "E_QUERY_REJECTED"


def test_custom_code_receipt_says_it_depends_on_review(room: Room) -> None:
    bundle = room.bundle("SELECT uid AS unit FROM crm", {"mode": "aggregate",
                                                         "privacy_unit": "unit"}, inputs=("crm",))
    doc = room.run(room.job_dir(bundle, room.approvals(bundle)))
    assert doc["status"] == "succeeded", doc["error_code"]
    assert receipt_of(doc)["privacy"]["guarantee"] == "depends on code review"


def test_a_template_is_held_to_the_roles_too(room: Room) -> None:
    # visits.exposed is a dimension, not a measure: enrichment cannot average it
    params = {"accounts": "crm", "attributes": "visits", "segment": "segment",
              "score": "exposed", "score_lower": "0", "score_upper": "1", "segments": ["a", "b"]}
    t = build("enrichment", params)
    bundle = room.bundle(t.code, t.output.to_dict(), kind="template", template="enrichment",
                         params=params, plan=t.plan, inputs=t.plan.inputs)
    doc = room.run(room.job_dir(bundle, room.approvals(bundle)))
    assert doc["status"] == "refused" and doc["error_code"] == "E_QUERY_REJECTED"


@pytest.mark.parametrize("name, params", [
    ("overlap", {"left": "crm", "right": "visits"}),
    ("incrementality", {"exposure": "visits", "conversions": "crm", "epsilon": "1"}),
])
def test_templates_are_plans(room: Room, name: str, params: dict[str, Any]) -> None:
    t = build(name, params)
    bundle = room.bundle(t.code, t.output.to_dict(), kind="template", template=name,
                         params=params, plan=t.plan, inputs=t.plan.inputs)
    doc = room.run(room.job_dir(bundle, room.approvals(bundle)))
    assert doc["status"] == "succeeded", doc["error_code"]
    out = output_of(room, doc)
    assert out["meta"]["guarantee"] == "by construction"
    if name == "overlap":
        cells = {r[0]: r[1] for r in out["meta"]["cells"]["rows"]}
        assert cells == {"both": 200, "left_only": 200, "right_only": 100}
    assert Envelope.from_dict(doc["receipt"])
