"""Admission (sdk/protocol/admission.py): the one rule deciding whether a bundle may read the
room's data — the SDK, the coordinator and the worker all call it through verify_bundle."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from sdk.errors import InputError, QueryRejectedError
from sdk.protocol.admission import admit_bundle, guarantee_of, plan_output
from sdk.protocol.keys import PartyKey, Signer
from sdk.protocol.models import Bundle, BundleInput, Manifest
from sdk.protocol.plan import Call, Col, Join, Lit, Plan, PlanGroup, PlanMeasure
from sdk.protocol.spec import DPSpec, OutputSpec
from sdk.protocol.sqlplan import plan_from_sql
from sdk.protocol.templates import build
from tests.kit import seed

ALICE = PartyKey.from_seeds("alice", seed("a-s"), seed("a-e"))
BOB = PartyKey.from_seeds("bob", seed("b-s"), seed("b-e"))


def manifest(custom: bool = False) -> Manifest:
    def party(k: PartyKey) -> dict[str, Any]:
        return {**k.identity.to_dict(), "roles": ["data_owner", "analyst", "recipient"]}

    def ds(name: str, owner: str, roles: dict[str, str]) -> dict[str, Any]:
        return {"name": name, "owner": owner, "id_column": "uid", "id_kind": "sha256",
                "schema": [{"name": "uid", "type": "string"},
                           *({"name": c, "type": "string"} for c in [*roles, "secret"])],
                "min_group_size": 5, "epsilon_budget": "5", "roles": roles,
                "allow_custom_code": custom}

    return Manifest.from_dict({
        "room_id": "r", "version": 1, "parties": [party(ALICE), party(BOB)],
        "datasets": [ds("crm", "alice", {"spend": "measure", "tier": "filter"}),
                     ds("visits", "bob", {"segment": "dimension"})],
        "workers": {"measurements": [], "providers": ["simulated"],
                    "platform_keys": [Signer.from_seed(seed("p")).public_key.hex()]},
        "policies": {"min_group_size": 5, "max_runs": 5}, "expires": "2099-01-01T00:00:00Z",
    })


PLAN = Plan(("crm", "visits"), (Join("visits"),), None,
            (PlanGroup("segment", Col("visits", "segment"), ("a", "b")),),
            (PlanMeasure("people", "count"),
             PlanMeasure("spend", "sum", Call("to_decimal", (Col("crm", "spend"),)), "0", "9")))
SQL = ("SELECT v.segment AS segment, COUNT(*) AS people, "
       "SUM(LEAST(GREATEST(CAST(c.spend AS DOUBLE), 0), 9)) AS spend "
       "FROM crm c JOIN visits v ON c.uid = v.uid GROUP BY 1")


def bundle(plan: Plan | None = PLAN, **over: Any) -> Bundle:
    fields: dict[str, Any] = {
        "room_id": "r", "manifest_digest": "0" * 64, "sequence": 1, "author": "alice",
        "title": "t", "purpose": "", "kind": "plan", "code": "", "template": None,
        "params": {}, "inputs": tuple(BundleInput(n, follow_latest=True) for n in (plan.inputs if plan else
                                                               ("crm",))),
        "output": plan_output(plan) if plan else OutputSpec("aggregate", "unit"),
        "recipients": ("alice",), "max_runs": 1, "not_before": "2020-01-01T00:00:00Z",
        "expires": "2099-01-01T00:00:00Z", "plan": plan,
    }
    fields.update(over)
    return Bundle(**fields)


def test_a_plan_within_the_roles_is_admitted() -> None:
    admit_bundle(manifest(), bundle())
    assert guarantee_of(bundle()) == "by construction"


def test_a_sql_plan_must_be_what_its_sql_translates_to() -> None:
    m = manifest()
    plan = plan_from_sql(SQL, {d.name: d.plan_columns() for d in m.datasets},
                         domains={"segment": ("a", "b")})
    admit_bundle(m, bundle(plan, kind="sql", code=SQL, output=plan_output(plan)))
    other = SQL.replace("9)) AS spend", "8)) AS spend")
    with pytest.raises(QueryRejectedError, match="differs from what its SQL translates to"):
        admit_bundle(m, bundle(plan, kind="sql", code=other, output=plan_output(plan)))


@pytest.mark.parametrize("change, message", [
    ({"code": "SELECT 'looks harmless'"}, "no code"),
    ({"params": {"x": 1}}, "no params"),
    ({"inputs": (BundleInput("visits", follow_latest=True),
                 BundleInput("crm", follow_latest=True))}, "inputs differ"),
    ({"output": replace(plan_output(PLAN), max_contributions=5)}, "output spec differs"),
    ({"output": replace(plan_output(PLAN), privacy_unit="uid")}, "output spec differs"),
    ({"output": replace(plan_output(PLAN), max_groups=1)}, "exceed max_groups"),
])
def test_a_plan_bundle_carries_nothing_the_plan_does_not_imply(
        change: dict[str, Any], message: str) -> None:
    with pytest.raises(QueryRejectedError, match=message):
        admit_bundle(manifest(), bundle(**change))


def test_roles_are_the_owners_not_the_authors() -> None:
    bad = replace(PLAN, group_by=(PlanGroup("t", Col("crm", "tier"), None),))
    with pytest.raises(QueryRejectedError, match=r"\(filter\) read in group_by"):
        admit_bundle(manifest(), bundle(bad, output=plan_output(bad)))
    leak = replace(PLAN, where=Call("eq", (Col("crm", "secret"), Lit("x"))))
    with pytest.raises(QueryRejectedError, match=r"\(private\)"):
        admit_bundle(manifest(), bundle(leak, output=plan_output(leak)))


def test_a_list_goes_only_to_the_first_inputs_owner_and_never_with_dp() -> None:
    listing = Plan(("crm", "visits"), (Join("visits"),), None, (), (), 1, "list")
    admit_bundle(manifest(), bundle(listing, output=plan_output(listing)))
    with pytest.raises(QueryRejectedError, match="goes only to its owner"):
        admit_bundle(manifest(), bundle(listing, output=plan_output(listing),
                                        recipients=("bob",)))
    with_dp = replace(plan_output(listing), dp=DPSpec("1"))
    with pytest.raises(QueryRejectedError, match="differential privacy"):
        admit_bundle(manifest(), bundle(listing, output=with_dp))
    full = replace(listing, joins=(Join("visits", "full"),))
    with pytest.raises(QueryRejectedError, match="full join in a list"):
        admit_bundle(manifest(), bundle(full, output=plan_output(full)))


def test_custom_code_needs_every_owner_to_allow_it() -> None:
    custom = bundle(None, kind="sql", code="SELECT uid AS unit FROM crm")
    with pytest.raises(QueryRejectedError, match="did not allow custom code"):
        admit_bundle(manifest(custom=False), custom)
    admit_bundle(manifest(custom=True), custom)
    assert guarantee_of(custom) == "depends on code review"
    with pytest.raises(QueryRejectedError, match="kind plan without a plan"):
        admit_bundle(manifest(custom=True), bundle(None, kind="plan"))


def test_a_template_must_be_what_its_template_generates() -> None:
    params = {"left": "crm", "right": "visits"}
    t = build("overlap", params)
    ok = bundle(t.plan, kind="template", template="overlap", params=params, output=t.output)
    admit_bundle(manifest(), ok)
    edited = replace(t.plan, joins=(Join("visits", "inner"),))
    with pytest.raises(InputError, match="differ from what template"):
        admit_bundle(manifest(), replace(ok, plan=edited))
