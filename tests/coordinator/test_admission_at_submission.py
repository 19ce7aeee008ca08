"""The coordinator admits bundles by the room's column policies at submission (the same rule
as the SDK and the worker): a plan reading a private column, or custom code over a dataset
whose owner did not allow it, is refused with E_QUERY_REJECTED and nothing is stored."""

from __future__ import annotations

import pytest

from sdk.errors import QueryRejectedError
from sdk.party.statements import make_bundle, sign_manifest
from sdk.protocol.models import Manifest
from sdk.protocol.plan import Col, Join, Plan, PlanGroup, PlanMeasure
from sdk.protocol.planoutput import plan_output
from sdk.protocol.spec import OutputSpec
from tests.coordinator.conftest import Env
from tests.kit import follow

LEAK = Plan(("crm", "visits"), (Join("visits"),), None,
            (PlanGroup("x", Col("visits", "x"), None),), (PlanMeasure("n", "count"),))
COUNT = Plan(("crm", "visits"), (Join("visits"),), None, (), (PlanMeasure("n", "count"),))


def _plan_bundle(env: Env, plan: Plan, manifest: Manifest, digest: str) -> object:
    return make_bundle(env.alice, manifest, digest, sequence=7, title="t", purpose="p",
                       kind="plan", code="", output=plan_output(plan),
                       inputs=follow(*plan.inputs), recipients=["alice"], plan=plan)


def test_a_plan_outside_the_roles_is_refused_and_not_stored(env: Env) -> None:
    env.setup_room()
    client = env.client(env.alice)
    with pytest.raises(QueryRejectedError, match=r"visits\.x \(private\)"):
        client.submit_bundle(env.room_id, _plan_bundle(env, LEAK, env.manifest, env.digest))
    assert client.bundles(env.room_id) == []
    client.submit_bundle(env.room_id, _plan_bundle(env, COUNT, env.manifest, env.digest))
    assert len(client.bundles(env.room_id)) == 1


def test_custom_code_needs_every_owner_to_allow_it(env: Env) -> None:
    closed = Manifest.from_dict({
        **env.manifest.to_dict(), "room_id": "closed",
        "datasets": [{k: v for k, v in d.to_dict().items() if k != "allow_custom_code"}
                     for d in env.manifest.datasets]})
    envelope = sign_manifest(sign_manifest(closed, env.alice), env.bob)
    client = env.client(env.alice)
    client.submit_manifest(envelope)
    custom = make_bundle(env.alice, closed, envelope.digest(), sequence=1, title="t",
                         purpose="p", kind="sql", code="SELECT uid FROM crm",
                         output=OutputSpec("aggregate", "uid"), inputs=follow("crm"),
                         recipients=["alice"])
    with pytest.raises(QueryRejectedError, match="did not allow custom code"):
        client.submit_bundle("closed", custom)
    assert client.bundles("closed") == []
