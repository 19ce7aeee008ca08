"""Inputs with one row per person (issue 13): an upload statement may say so, the worker checks
it once per upload before any plan reads the file, the log keeps the result, and plans then
skip the per-person bounding for that input with exactly the same figures. A false statement
fails the run with ``E_INPUT`` naming that dataset, before the plan runs: nothing released."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from enclave.ledger import ONE_ROW_CHECKED
from sdk.protocol.canonical import parse_json
from sdk.protocol.dsse import Envelope
from sdk.protocol.plan import Col, Join, Plan, PlanGroup, PlanMeasure
from tests.enclave.test_job_runs import no_canary, output_of, receipt_of
from tests.kit import CANARY, Room, demo_tables

PLAN = Plan(("crm", "visits"), (Join("visits"),), None,
            (PlanGroup("exposed", Col("visits", "exposed"), ("0", "1")),),
            (PlanMeasure("people", "count"),
             PlanMeasure("spend", "sum", Col("crm", "spend"), "0", "100")))


def checked(doc: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for entry in doc["log_entries"]:
        body = parse_json(Envelope.from_dict(entry).payload)
        assert isinstance(body, dict)
        if body["kind"] == "run_finished":
            out += body["details"].get(ONE_ROW_CHECKED, [])
    return out


def make_room(path: Path, one_row: bool | None) -> Room:
    room = Room(path, epsilon_budget="50")
    crm, visits = demo_tables()
    room.upload(room.alice, "crm", crm, one_row=one_row)
    room.upload(room.bob, "visits", visits, one_row=one_row)
    return room


def test_one_row_statements_are_checked_once_and_give_the_bounded_figures(tmp_path: Path) -> None:
    marked = make_room(tmp_path / "marked", None)  # the kit says what the SDK would: one row
    plain = make_room(tmp_path / "plain", False)
    assert all(parse_json(u.payload)["one_row_per_person"] is True  # type: ignore[index]
               for u in marked.uploads)
    bundle = marked.plan_bundle(PLAN)
    first = marked.run(marked.job_dir(bundle, marked.approvals(bundle)))
    assert first["status"] == "succeeded", first["error_code"]
    assert sorted(checked(first)) == sorted(u.digest() for u in marked.uploads)
    second = marked.run(marked.job_dir(bundle, marked.approvals(bundle)))
    assert second["status"] == "succeeded", second["error_code"]
    assert checked(second) == []  # the log holds the check: not done again
    other = plain.plan_bundle(PLAN)
    bounded = plain.run(plain.job_dir(other, plain.approvals(other)))
    assert checked(bounded) == []  # nothing claimed, nothing checked: bounded as before
    assert output_of(marked, first)["rows"] == output_of(marked, second)["rows"] \
        == output_of(plain, bounded)["rows"]
    no_canary(first, marked)


def test_a_false_one_row_statement_fails_the_run_before_the_plan(tmp_path: Path) -> None:
    room = Room(tmp_path / "room", epsilon_budget="50")
    crm, visits = demo_tables()
    # bob plants three more rows of one of alice's persons and still signs "one row per person"
    planted = pa.concat_tables([visits, visits.slice(0, 1), visits.slice(0, 1),
                                visits.slice(0, 1)])
    room.upload(room.alice, "crm", crm)
    room.upload(room.bob, "visits", planted, one_row=True)
    bundle = room.plan_bundle(PLAN)
    doc = room.run(room.job_dir(bundle, room.approvals(bundle)))
    assert (doc["status"], doc["error_code"]) == ("failed", "E_INPUT")
    receipt = receipt_of(doc)
    assert receipt["outputs"] == [] and doc["outputs"] == {}
    assert "'visits'" in receipt["details"]["message"]
    assert "'crm'" not in receipt["details"]["message"]
    assert checked(doc) == []
    assert CANARY not in repr(doc)
