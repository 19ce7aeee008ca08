"""The Python plan builder (sdk/protocol/planbuilder.py): it builds the same plans as SQL, and
data can never reach Python control flow — an expression has no truth value, no number, no
length and no hash."""

from __future__ import annotations

import pytest

from sdk.errors import QueryRejectedError
from sdk.protocol.canonical import canonical_json
from sdk.protocol.plan import DatasetColumns, validate
from sdk.protocol.planbuilder import dataset, query, when_
from sdk.protocol.sqlplan import plan_from_sql

DATASETS = {
    "customers": DatasetColumns("email", "email", {"segment": "dimension", "spend": "measure",
                                                   "region": "filter"}),
    "visitors": DatasetColumns("email", "email", {"plan": "dimension", "minutes": "measure"}),
}


def test_builder_and_sql_agree() -> None:
    c, v = dataset("customers"), dataset("visitors")
    built = (query(c).join(v)
             .where(c["region"].isin("eu", "us"))
             .group_by(segment=c["segment"])
             .count("people")
             .sum("minutes", v["minutes"], lower=0, upper=600)
             .build())
    validate(built, DATASETS)
    from_sql = plan_from_sql(
        "SELECT segment AS segment, COUNT(*) AS people, "
        "SUM(LEAST(GREATEST(v.minutes, 0), 600)) AS minutes "
        "FROM customers JOIN visitors v USING (email) WHERE region IN ('eu', 'us') "
        "GROUP BY segment", DATASETS)
    assert canonical_json(built.to_dict()) == canonical_json(from_sql.to_dict())


def test_conditions_are_expressions() -> None:
    c = dataset("customers")
    plan = (query(c).group_by(tier=when_(c["segment"] == "vip", "top", "rest"))
            .count().build())
    validate(plan, DATASETS)


@pytest.mark.parametrize("probe", [
    lambda e: bool(e == "x"),
    lambda e: 1 if e > 3 else 0,
    lambda e: int(e),
    lambda e: float(e),
    lambda e: list(e),
    lambda e: len(e),
    lambda e: {e: 1},
    lambda e: [0, 1][e],
    lambda e: (e == "a") and (e == "b"),
])
def test_data_never_reaches_python_control_flow(probe: object) -> None:
    column = dataset("customers")["segment"]
    with pytest.raises((QueryRejectedError, TypeError)):
        probe(column)  # type: ignore[operator]


def test_only_literals_enter_a_plan() -> None:
    c = dataset("customers")
    with pytest.raises(QueryRejectedError):
        c["segment"] == 1.5  # noqa: B015 - floats are not plan literals
    with pytest.raises(QueryRejectedError):
        c["segment"] == object()  # noqa: B015
