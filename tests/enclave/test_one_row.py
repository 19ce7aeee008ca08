"""Inputs with one row per person (issue 13): an upload statement may say so, the worker checks
it once per upload before any plan reads the file, the log keeps the result, and plans then
skip the per-person bounding for that input with exactly the same figures. A false statement
fails the run with ``E_INPUT`` naming that dataset, before the plan runs: nothing released."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from enclave.ledger import ONE_ROW_CHECKED
from sdk.protocol.canonical import parse_json
from sdk.protocol.dsse import Envelope
from sdk.protocol.plan import Col, Join, Plan, PlanGroup, PlanMeasure
from tests.enclave.test_job_runs import no_canary, output_of, receipt_of
from tests.kit import CANARY, Room, demo_tables

SINGLE = Plan(("visits",), (), None,
              (PlanGroup("exposed", Col("visits", "exposed"), ("0", "1")),),
              (PlanMeasure("people", "count"),))
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
    # the first run measured the match rate in the same pass as its check: the same rates
    assert receipt_of(first)["match"] == receipt_of(second)["match"] \
        == receipt_of(bounded)["match"]
    assert [m["rate"] for m in receipt_of(first)["match"]] == ["0.5000", "0.6667"]
    no_canary(first, marked)


@pytest.mark.parametrize("lie", ["copies", "empty id"])
@pytest.mark.parametrize("plan", [PLAN, SINGLE], ids=["join", "single"])
def test_a_false_one_row_statement_fails_the_run_before_the_plan(
        tmp_path: Path, lie: str, plan: Plan) -> None:
    """Checked in one pass with the match rate (a join's first run) or alone (one input)."""
    room = Room(tmp_path / "room", epsilon_budget="50")
    crm, visits = demo_tables()
    if lie == "copies":  # three more rows of one of alice's persons
        planted = pa.concat_tables([visits, visits.slice(0, 1), visits.slice(0, 1),
                                    visits.slice(0, 1)])
    else:
        empty = visits.slice(0, 1).set_column(0, "uid", pa.array([None], pa.string()))
        planted = pa.concat_tables([visits, empty])
    room.upload(room.alice, "crm", crm)
    room.upload(room.bob, "visits", planted, one_row=True)  # and still signs one row
    bundle = room.plan_bundle(plan)
    doc = room.run(room.job_dir(bundle, room.approvals(bundle)))
    assert (doc["status"], doc["error_code"]) == ("failed", "E_INPUT")
    receipt = receipt_of(doc)
    assert receipt["outputs"] == [] and doc["outputs"] == {}
    assert "'visits'" in receipt["details"]["message"]
    assert "'crm'" not in receipt["details"]["message"]
    assert checked(doc) == []
    assert CANARY not in repr(doc)


def test_the_runner_marks_the_match_row_as_the_plan_does() -> None:
    from enclave.runner import child
    from sdk.protocol.plan import MATCH_MARK

    assert child.MATCH_MARK == MATCH_MARK


def test_a_job_frees_its_decrypted_inputs_when_it_ends(tmp_path: Path) -> None:
    """The plaintext lives in in-memory files for the run only: once the outputs are sealed,
    the job closes them (a process running a second job must not hold two jobs' inputs)."""
    from enclave.job import Job

    room = make_room(tmp_path, None)
    bundle = room.plan_bundle(PLAN)
    job = Job(room.job_dir(bundle, room.approvals(bundle)), image_id="unisolated",
              isolation="none")
    opened: list[Any] = []
    decrypt = job._decrypt

    def spy(*args: Any) -> Any:
        tables = decrypt(*args)
        opened.extend(job.files.values())
        return tables

    job._decrypt = spy  # type: ignore[method-assign]
    doc = job.run()
    assert doc["status"] == "succeeded", doc["error_code"]
    assert len(opened) == 2 and job.files == {}
    assert all(f.fd == -1 for f in opened)
