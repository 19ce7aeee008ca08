"""The worker, as the verifier of record, on pinned inputs and the measured match rate
(issue 10): a pinned bundle reads exactly the upload it names, a follow-latest input runs only
with its owner's explicit agreement, and every join reports each input's match rate, exact
without DP, noised with DP, withheld below the minimum group size."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from sdk.party.statements import make_approval
from sdk.protocol.dsse import Envelope
from sdk.protocol.models import BundleInput
from sdk.protocol.plan import Join, Plan, PlanMeasure
from tests.enclave.test_job_runs import no_canary, output_of, receipt_of
from tests.kit import Room, demo_tables, follow

COUNT = PlanMeasure("people", "count")
OVERLAP = Plan(("crm", "visits"), (Join("visits"),), None, (), (COUNT,))


@pytest.fixture()
def room(tmp_path: Path) -> Room:
    r = Room(tmp_path / "room", epsilon_budget="50")
    crm, visits = demo_tables()  # 400 and 300 persons, 200 in both
    r.upload(r.alice, "crm", crm)
    r.upload(r.bob, "visits", visits)
    return r


def rates(doc: dict[str, object]) -> dict[str, str | None]:
    return {m["dataset"]: m["rate"] for m in receipt_of(doc)["match"]}


def test_a_pinned_bundle_reads_the_upload_it_names_not_a_newer_one(room: Room) -> None:
    bundle = room.plan_bundle(OVERLAP)  # pins crm v1 and visits v1
    crm, _ = demo_tables(n_crm=250, overlap=100)
    room.upload(room.alice, "crm", crm, version=2)
    doc = room.run(room.job_dir(bundle, room.approvals(bundle)))
    assert doc["status"] == "succeeded", doc["error_code"]
    inputs = {i["dataset"]: i for i in receipt_of(doc)["inputs"]}
    assert (inputs["crm"]["version"], inputs["crm"]["row_count"]) == (1, 400)
    assert output_of(room, doc)["rows"][0][0] == 200
    # without the pinned statement among the uploads, the run is refused (nothing else read)
    doc = room.run(room.job_dir(bundle, room.approvals(bundle), uploads=room.uploads[1:]))
    assert (doc["status"], doc["error_code"]) == ("refused", "E_INPUT")


def test_follow_latest_runs_only_with_the_owners_agreement(room: Room) -> None:
    bundle = room.plan_bundle(OVERLAP)
    # the kit pins by default; a standing bundle follows crm and pins visits
    standing = _standing(room, follow("crm") + [BundleInput("visits", 1,
                                                            room.uploads[1].digest())])
    crm, _ = demo_tables(n_crm=250, overlap=100)
    room.upload(room.alice, "crm", crm, version=2)
    plain = [make_approval(k, room.manifest, room.manifest_digest, standing.digest())
             for k in (room.alice, room.bob)]
    doc = room.run(room.job_dir(standing, plain))
    assert (doc["status"], doc["error_code"]) == ("refused", "E_SIGNATURE")
    assert "alice has not agreed" in receipt_of(doc)["details"]["message"]
    doc = room.run(room.job_dir(standing, room.approvals(standing)))
    assert doc["status"] == "succeeded", doc["error_code"]
    inputs = {i["dataset"]: i for i in receipt_of(doc)["inputs"]}
    assert (inputs["crm"]["version"], inputs["crm"]["follow_latest"]) == (2, True)
    assert output_of(room, doc)["rows"][0][0] == 50  # v2 crm: ids 0-249; visits v1: 200-499
    assert bundle.digest() != standing.digest()


def _standing(room: Room, inputs: list[BundleInput]) -> Envelope:
    from sdk.party.statements import make_bundle
    from sdk.protocol.planoutput import plan_output
    from sdk.protocol.spec import OutputSpec

    like = OutputSpec.from_dict({"mode": "aggregate", "privacy_unit": "person"})
    return make_bundle(room.alice, room.manifest, room.manifest_digest, sequence=2, title="s",
                       purpose="p", kind="plan", code="", output=plan_output(OVERLAP, like),
                       inputs=inputs, recipients=["alice"], plan=OVERLAP)


def test_match_rate_is_exact_without_dp(room: Room) -> None:
    bundle = room.plan_bundle(OVERLAP)
    doc = room.run(room.job_dir(bundle, room.approvals(bundle)))
    assert rates(doc) == {"crm": "0.5000", "visits": "0.6667"}
    assert {m["party"] for m in receipt_of(doc)["match"]} == {"alice", "bob"}
    no_canary(doc, room)


def test_match_rate_is_noised_with_dp_and_within_the_declared_epsilon(room: Room) -> None:
    bundle = room.plan_bundle(OVERLAP, dp={"epsilon": "1"})
    seen = set()
    for _ in range(3):  # each on the same log: every one is a first measurement
        doc = room.run(room.job_dir(bundle, room.approvals(bundle)), commit=False)
        assert doc["status"] == "succeeded", doc["error_code"]
        got = rates(doc)
        seen.add(got["crm"])
        # noise of scale 20 persons on 200 matched of 400: 0.4 is about eight scales away
        assert got["crm"] is not None and abs(Decimal(got["crm"]) - Decimal("0.5")) < Decimal("0.4")
        privacy = receipt_of(doc)["privacy"]
        assert privacy["epsilon_charged"] == "1"
        assert "0.1 more for the match rate" in output_of(room, doc)["meta"]["mechanism"]
    assert len(seen) > 1  # noise: scale 2/0.1 = 20 persons, three draws do not all agree


def test_match_rate_is_withheld_below_the_minimum_group_size(tmp_path: Path) -> None:
    r = Room(tmp_path / "small", min_group_size=50)
    crm, visits = demo_tables(n_crm=100, n_visits=80, overlap=30)
    r.upload(r.alice, "crm", crm)
    r.upload(r.bob, "visits", visits)
    bundle = r.plan_bundle(OVERLAP, min_group_size=50)
    doc = r.run(r.job_dir(bundle, r.approvals(bundle)))
    assert doc["status"] == "succeeded", doc["error_code"]
    assert rates(doc) == {"crm": None, "visits": None}


def test_a_plan_without_a_join_has_no_match_rate(room: Room) -> None:
    bundle = room.plan_bundle(Plan(("crm",), (), None, (), (COUNT,)))
    doc = room.run(room.job_dir(bundle, room.approvals(bundle)))
    assert doc["status"] == "succeeded", doc["error_code"]
    assert receipt_of(doc)["match"] == []


def test_the_match_rate_is_released_once_per_set_of_uploads(room: Room) -> None:
    """A later run over the same uploads repeats the rates its log holds (no new noise to
    average away, and the cells get the whole epsilon); new uploads are measured afresh."""
    bundle = room.plan_bundle(OVERLAP, dp={"epsilon": "1"})
    first = room.run(room.job_dir(bundle, room.approvals(bundle)))
    again = room.run(room.job_dir(bundle, room.approvals(bundle)))
    assert rates(first) == rates(again)
    meta = output_of(room, again)["meta"]
    assert "more for the match rate" not in meta["mechanism"]  # the cells got all of epsilon
    other = room.plan_bundle(OVERLAP)  # no DP, same uploads: the released rates, again
    doc = room.run(room.job_dir(other, room.approvals(other)))
    assert rates(doc) == rates(first)
    crm, _ = demo_tables(n_crm=250, overlap=100)
    room.upload(room.alice, "crm", crm, version=2)
    fresh = room.plan_bundle(OVERLAP)
    doc = room.run(room.job_dir(fresh, room.approvals(fresh)))
    assert rates(doc) == {"crm": "0.2000", "visits": "0.1667"}  # 50 of 250, 50 of 300


def test_another_input_order_repeats_the_same_rates(room: Room) -> None:
    """Reordering a bundle's inputs is no way to a fresh noise draw: the rates are keyed by the
    set of uploads."""
    bundle = room.plan_bundle(OVERLAP, dp={"epsilon": "1"})
    first = room.run(room.job_dir(bundle, room.approvals(bundle)))
    flipped = Plan(("visits", "crm"), (Join("crm"),), None, (), (COUNT,))
    other = room.plan_bundle(flipped, dp={"epsilon": "1"})
    doc = room.run(room.job_dir(other, room.approvals(other)))
    assert rates(doc) == rates(first)
    assert [m["dataset"] for m in receipt_of(doc)["match"]] == ["visits", "crm"]
