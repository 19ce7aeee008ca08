"""SQL bundles become plans (sdk/protocol/sqlplan.py): the grammar is an allow-list, and every
construct outside it is refused with its name and position — including the attack classes of
issue 13 (broadcast values, invented units, cross-row tricks)."""

from __future__ import annotations

import pytest

from sdk.errors import QueryRejectedError
from sdk.protocol.plan import Call, Col, DatasetColumns, Join, Lit, compile_duckdb
from sdk.protocol.sqlplan import plan_from_sql

DATASETS = {
    "customers": DatasetColumns("email", "email", {"segment": "dimension", "spend": "measure",
                                                   "region": "filter", "name": "private"}),
    "visitors": DatasetColumns("email", "email", {"plan": "dimension", "minutes": "measure"}),
    "phones": DatasetColumns("phone", "phone", {"carrier": "dimension"}),
}


def test_an_overlap_query_becomes_a_plan() -> None:
    plan = plan_from_sql(
        """
        SELECT c.segment AS segment, COUNT(*) AS people,
               SUM(LEAST(GREATEST(v.minutes, 0), 600)) AS minutes,
               AVG(GREATEST(LEAST(c.spend, 1000), -10)) AS spend
        FROM customers AS c JOIN visitors AS v ON c.email = v.email
        WHERE c.region IN ('eu', 'us') AND NOT v.plan IS NULL
        GROUP BY 1
        """, DATASETS, max_contributions=2, domains={"segment": ("a", "b")})
    assert plan.inputs == ("customers", "visitors")
    assert plan.joins == (Join("visitors", "inner"),)
    assert plan.group_by[0].expr == Col("customers", "segment")
    assert plan.group_by[0].domain == ("a", "b")
    assert [(m.name, m.agg, m.lower, m.upper) for m in plan.measures] == [
        ("people", "count", "0", "0"), ("minutes", "sum", "0", "600"),
        ("spend", "mean", "-10", "1000")]
    assert isinstance(plan.where, Call) and plan.where.fn == "and"
    assert plan.max_contributions == 2
    compile_duckdb(plan, DATASETS)


def test_expressions_translate() -> None:
    plan = plan_from_sql(
        "SELECT CASE WHEN lower(segment) = 'vip' THEN 'top' ELSE 'rest' END AS tier, "
        "COUNT(*) AS n FROM customers LEFT JOIN visitors USING (email) "
        "WHERE TRY_CAST(region AS VARCHAR) BETWEEN 'a' AND 'm' GROUP BY tier",
        DATASETS)
    assert plan.joins == (Join("visitors", "left"),)
    tier = plan.group_by[0].expr
    assert isinstance(tier, Call) and tier.fn == "if" and tier.args[1] == Lit("top")


REFUSED = [
    # broadcast one person's value to every row
    ("SELECT (SELECT max(name) FROM customers) AS v, COUNT(*) AS n FROM visitors GROUP BY 1",
     "subquery"),
    ("SELECT c.segment AS s, COUNT(*) AS n FROM customers c CROSS JOIN visitors v GROUP BY 1",
     "join"),
    ("SELECT c.segment AS s, COUNT(*) AS n FROM customers c JOIN visitors v ON 1 = 1 GROUP BY 1",
     "join"),
    ("SELECT c.segment AS s, COUNT(*) AS n FROM customers c JOIN visitors v "
     "ON c.segment = v.plan GROUP BY 1", "id columns"),
    ("SELECT COUNT(*) AS n FROM customers c JOIN phones p ON c.email = p.phone", "id kinds"),
    # invented units and cross-row tricks
    ("SELECT COUNT(DISTINCT email || '-' || segment) AS n FROM customers", "COUNT of"),
    ("SELECT segment AS s, COUNT(*) AS n FROM customers, generate_series(1, 60) GROUP BY 1",
     "table function"),
    ("SELECT segment AS s, COUNT(*) AS n FROM read_csv('x.csv') GROUP BY 1", "table function"),
    ("SELECT segment AS s, row_number() OVER () AS r, COUNT(*) AS n FROM customers GROUP BY 1",
     "window"),
    ("SELECT segment AS s, COUNT(*) AS n FROM customers GROUP BY 1 ORDER BY 2 LIMIT 1", "LIMIT"),
    ("SELECT segment AS s, COUNT(*) AS n FROM customers GROUP BY 1 ORDER BY 2", "ORDER"),
    ("SELECT segment AS s, COUNT(*) AS n FROM customers GROUP BY 1 HAVING COUNT(*) > 1",
     "HAVING"),
    ("SELECT DISTINCT segment AS s, COUNT(*) AS n FROM customers GROUP BY 1", "DISTINCT"),
    ("SELECT COUNT(*) AS n FROM customers UNION SELECT COUNT(*) AS n FROM visitors", "UNION"),
    ("WITH t AS (SELECT * FROM customers) SELECT COUNT(*) AS n FROM t", "WITH"),
    ("SELECT COUNT(*) AS n FROM customers USING SAMPLE 10%", "sample"),
    ("SELECT COUNT(*) AS n FROM customers; SELECT 1", "one SELECT"),
    ("SELECT COUNT(*) AS n FROM customers c JOIN customers d ON c.email = d.email", "twice"),
    # columns outside their role
    ("SELECT email AS e, COUNT(*) AS n FROM customers GROUP BY 1", "(id)"),
    ("SELECT name AS nm, COUNT(*) AS n FROM customers GROUP BY 1", "(private)"),
    ("SELECT region AS r, COUNT(*) AS n FROM customers GROUP BY 1", "(filter)"),
    ("SELECT COUNT(*) AS n FROM customers WHERE spend > 100", "(measure)"),
    ("SELECT COUNT(*) AS n FROM customers WHERE email LIKE 'a%'", "LIKE"),
    # aggregates the platform does not release
    ("SELECT SUM(spend) AS s FROM customers", "unclamped"),
    ("SELECT MAX(spend) AS s FROM customers", "MAX"),
    ("SELECT segment AS s FROM customers", "without COUNT"),
    ("SELECT segment AS s, COUNT(*) AS n FROM customers", "GROUP BY"),
    ("SELECT * FROM customers", "SELECT *"),
    ("SELEC broken", "not a SELECT"),
    ("SELECT FROM WHERE (", "does not parse"),
]


@pytest.mark.parametrize("sql, construct", REFUSED, ids=[r[1] + str(i) for i, r in
                                                          enumerate(REFUSED)])
def test_constructs_outside_the_grammar_are_refused(sql: str, construct: str) -> None:
    with pytest.raises(QueryRejectedError) as err:
        plan_from_sql(sql, DATASETS)
    message = err.value.message
    assert construct.lower() in message.lower(), message
    assert len(message) < 300


def test_refusals_name_the_position() -> None:
    with pytest.raises(QueryRejectedError, match=r"line 2, column \d+"):
        plan_from_sql("SELECT COUNT(*) AS n FROM customers\nWHERE segment LIKE 'x%'", DATASETS)
