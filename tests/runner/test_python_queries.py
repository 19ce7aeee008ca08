"""Python bundles through the real runner: the happy paths."""

from __future__ import annotations

import datetime

import pytest

from enclave.runner import run_query
from tests.runner.conftest import CANARY, LIMITS, people_table, sha
from tests.runner.test_sql import JOIN_SQL, expected_join

pytestmark = pytest.mark.timeout(60)

JOIN_PY = """
def query(tables, params):
    p = tables["people"]
    o = tables["orders"]
    j = p.join(o, on="id", how="inner")
    j = j.with_column("score", j["age"] * 2 + j["total"])
    keep = (j["age"] >= params["min_age"]) & j["country"].isin(params["countries"])
    return j.filter(keep).select("id", "score")
"""


def test_python_join_derived_filter(tables: dict[str, bytes]) -> None:
    params = {"min_age": 30, "countries": ["FR", "DE"]}
    result = run_query("python", JOIN_PY, tables, params, LIMITS)
    assert result.column_names == ["id", "score"]
    rows = sorted(result.to_pylist(), key=lambda r: (r["id"], r["score"]))
    assert rows == expected_join()


def test_python_and_sql_agree(tables: dict[str, bytes]) -> None:
    params = {"min_age": 30, "countries": ["FR", "DE"]}
    py = run_query("python", JOIN_PY, tables, params, LIMITS)
    sql = run_query("sql", JOIN_SQL, tables, {}, LIMITS)
    assert sorted(py.to_pylist(), key=str) == sorted(sql.to_pylist(), key=str)


FEATURES_PY = """
def query(tables, params):
    p = tables["people"]
    p = p.with_column("email_hash", p["email"].strip().lower().sha256())
    p = p.with_column("signup_date", p["signup"].to_date())
    p = p.with_column("year", p["signup_date"].year())
    p = p.with_column("month", p["signup_date"].month())
    p = p.with_column("band", p["age"] // 10 * 10)
    p = p.with_column("odd", p["age"] % 2 == 1)
    p = p.dropna(["signup_date"]).fillna({"country": "??"})
    left = p.join(tables["orders"], on="id", how="left")
    left = left.with_column("total", left["total"].fillna(0.0))
    g = left.group_by("country", "band").agg(
        people=("id", "nunique"), orders=("total", "count"), rows=("id", "size"),
        spend=("total", "sum"), avg_age=("age", "mean"), first=("month", "min"),
        last=("month", "max"))
    both = concat([g, g]).distinct()
    names = sorted([c for c in both.columns if c != "band"])
    return both.rename({"band": "age_band"})
"""


def test_python_feature_tour(tables: dict[str, bytes]) -> None:
    result = run_query("python", FEATURES_PY, tables, {}, LIMITS)
    assert set(result.column_names) == {"country", "age_band", "people", "orders", "rows",
                                        "spend", "avg_age", "first", "last"}
    people = [p for p in people_table().to_pylist() if p["signup"] != CANARY]
    assert sum(r["people"] for r in result.to_pylist()) == len(people)
    assert CANARY not in {r["country"] for r in result.to_pylist()}


def test_python_hash_and_dates(tables: dict[str, bytes]) -> None:
    code = """
def query(tables, params):
    p = tables["people"]
    p = p.with_column("h", p["email"].sha256()).with_column("d", p["signup"].to_date())
    return p.filter(p["h"] == p["id"]).select("id", "d")
"""
    result = run_query("python", code, tables, {}, LIMITS).to_pylist()
    assert len(result) == 60
    by_id = {r["id"]: r["d"] for r in result}
    assert by_id[sha("user1@example.com")] == datetime.date(2024, 2, 2)
    assert by_id[sha(f"{CANARY}@example.com")] is None


CAUGHT_PY = """
def query(tables, params):
    t = tables["people"]
    o = tables["orders"]
    attempts = [
        lambda: t["ssn"] * 2,
        lambda: t["ssn"] + 1,
        lambda: t["ssn"] // t["email"],
        lambda: t.join(o, left_on="ssn", right_on="total"),
        lambda: t["ssn"].year(),
        lambda: t["age"] * 10**30,
        lambda: t.filter(t["ssn"]),
        lambda: t.group_by("ssn").agg(s=("email", "sum")),
    ]
    messages = []
    for attempt in attempts:
        try:
            attempt()
            messages.append("no error")
        except Exception as e:
            messages.append(str(e))
    out = t.select("id")
    for i, m in enumerate(messages):
        out = out.with_column("m" + str(i), m)
    return out
"""


def test_caught_errors_carry_no_data_into_python(tables: dict[str, bytes]) -> None:
    """Query code can catch exceptions; their text must not hold cell values (T18)."""
    result = run_query("python", CAUGHT_PY, tables, {}, LIMITS)
    messages = {v for name in result.column_names[1:] for v in result[name].to_pylist()}
    assert "no error" not in messages
    assert not any(CANARY in m or "000-00-" in m or "@example.com" in m for m in messages)
