"""Facade semantics, in process (trusted calls; the sandbox adds no behaviour of its own)."""

from __future__ import annotations

import datetime
import math

import pyarrow as pa
import pytest

from enclave.runner.facade import Column, GroupBy, Table, concat, unwrap_table, wrap_tables


def table(**columns: list[object]) -> Table:
    return wrap_tables({"t": pa.table(columns)})["t"]


def values(t: Table, name: str) -> list[object]:
    return unwrap_table(t)[name].to_pylist()


def derived(t: Table, column: Column) -> list[object]:
    return values(t.with_column("out", column), "out")


INTS = [7, -7, 7, -7, 0, 5]
DIVS = [2, 2, -2, -2, 3, 0]


def test_integer_floor_division_and_modulo_match_python() -> None:
    t = table(a=INTS, b=DIVS)
    expected_div = [a // b if b else None for a, b in zip(INTS, DIVS, strict=True)]
    expected_mod = [a % b if b else None for a, b in zip(INTS, DIVS, strict=True)]
    assert derived(t, t["a"] // t["b"]) == expected_div
    assert derived(t, t["a"] % t["b"]) == expected_mod
    assert derived(t, t["a"] // 0) == [None] * 6
    assert derived(t, 100 // t["b"]) == [50, 50, -50, -50, 33, None]


def test_float_division() -> None:
    t = table(a=[7.5, -7.5, 1.0], b=[2.0, 2.0, 0.0])
    assert derived(t, t["a"] / t["b"]) == [3.75, -3.75, None]
    assert derived(t, t["a"] // t["b"]) == [3.0, -4.0, None]
    assert derived(t, t["a"] % t["b"]) == [1.5, 0.5, None]
    assert derived(t, t["a"] * 2 - 1 + t["b"]) == [16.0, -14.0, 1.0]
    assert derived(t, -t["a"]) == [-7.5, 7.5, -1.0]
    assert derived(t, abs(t["a"])) == [7.5, 7.5, 1.0]
    assert derived(t, round(t["a"] / 3, 2)) == [2.5, -2.5, 0.33]


def test_integer_overflow_raises_without_arrow_text() -> None:
    t = table(a=[2**62])
    with pytest.raises(ValueError) as info:
        derived(t, t["a"] * 4)
    assert type(info.value) is ValueError
    assert str(info.value) == "ArrowInvalid in __mul__"
    with pytest.raises(NotImplementedError) as info2:
        derived(t, t["a"] + "x")
    assert str(info2.value) == "ArrowNotImplementedError in __add__"


def test_comparisons_and_boolean_logic() -> None:
    t = table(a=[1, 2, 3, None])
    assert derived(t, (t["a"] > 1) & (t["a"] < 3)) == [False, True, False, None]
    assert derived(t, (t["a"] == 1) | (t["a"] != 2)) == [True, False, True, None]
    assert derived(t, ~(t["a"] >= 2)) == [True, False, False, None]
    assert derived(t, 2 < t["a"]) == [False, False, True, None]
    assert values(t.filter(t["a"] <= 2), "a") == [1, 2]
    assert derived(t, t["a"].isin([1, 3])) == [True, False, True, False]
    assert derived(t, t["a"].isin([])) == [False] * 4
    assert derived(t, t["a"].isna()) == [False, False, False, True]
    assert derived(t, t["a"].notna()) == [True, True, True, False]


def test_strings_and_hashes() -> None:
    t = table(s=["  Ab ", None, "x"])
    assert derived(t, t["s"].strip().lower()) == ["ab", None, "x"]
    assert derived(t, t["s"].upper()) == ["  AB ", None, "X"]
    assert derived(t, t["s"] + "!") == ["  Ab !", None, "x!"]
    assert derived(t, "<" + t["s"]) == ["<  Ab ", None, "<x"]
    import hashlib

    assert derived(t, t["s"].sha256())[2] == hashlib.sha256(b"x").hexdigest()
    with pytest.raises(TypeError):
        table(a=[1])["a"].lower()


def test_dates() -> None:
    t = table(s=["2024-03-05", "nope", None, "2023-12-31"])
    d = t.with_column("d", t["s"].to_date())
    assert values(d, "d") == [datetime.date(2024, 3, 5), None, None, datetime.date(2023, 12, 31)]
    assert derived(d, d["d"].year()) == [2024, None, None, 2023]
    assert derived(d, d["d"].month()) == [3, None, None, 12]
    assert derived(d, d["d"].day()) == [5, None, None, 31]
    assert derived(d, d["d"] >= "2024-01-01") == [True, None, None, False]
    t2 = table(s=["05/03/2024"])
    assert derived(t2, t2["s"].to_date("%d/%m/%Y")) == [datetime.date(2024, 3, 5)]


def test_casts_turn_malformed_values_into_null() -> None:
    t = table(s=["12", " 7 ", "x", "1e3", None, "99999999999999999999"])
    assert derived(t, t["s"].cast("int")) == [12, 7, None, None, None, None]
    assert derived(t, t["s"].cast("float")) == [12.0, 7.0, None, 1000.0, None, 1e20]
    b = table(s=["true", "FALSE", "1", "yes"])
    assert derived(b, b["s"].cast("bool")) == [True, False, True, None]
    f = table(x=[1.9, -1.9, 1e30, math.nan])
    assert derived(f, f["x"].cast("int")) == [1, -1, None, None]
    a = table(a=[3])
    assert derived(a, a["a"].cast("str")) == ["3"]
    assert derived(a, a["a"].cast("float")) == [3.0]


def test_columns_must_come_from_the_same_rows() -> None:
    t = table(a=[1, 2, 3])
    other = table(a=[1, 2, 3])
    with pytest.raises(ValueError):
        t.with_column("b", other["a"])
    with pytest.raises(ValueError):
        t.filter(other["a"] > 1)
    same_rows = t.with_column("b", t["a"] * 2).select("a", "b").rename({"b": "c"})
    assert values(same_rows.filter(t["a"] > 1), "c") == [4, 6]
    filtered = t.filter(t["a"] > 1)
    with pytest.raises(ValueError):
        filtered.with_column("x", t["a"])


def test_joins() -> None:
    left = table(k=["a", "b", None, "c"], v=[1, 2, 3, 4])
    right = table(k=["a", None, "c", "c"], v=[10, 20, 30, 40], w=[1, 2, 3, 4])
    inner = unwrap_table(left.join(right, on="k"))
    assert sorted(inner.to_pylist(), key=str) == sorted([
        {"k": "a", "v": 1, "v_right": 10, "w": 1},
        {"k": "c", "v": 4, "v_right": 30, "w": 3},
        {"k": "c", "v": 4, "v_right": 40, "w": 4},
    ], key=str)
    outer = unwrap_table(left.join(right, on="k", how="left"))
    assert outer.num_rows == 5  # null keys never match, but left rows stay
    renamed = right.rename({"k": "key"})
    assert unwrap_table(left.join(renamed, left_on="k", right_on="key")).num_rows == 3
    with pytest.raises(ValueError):
        left.join(right, on="k", how="outer")


def test_group_by_and_distinct() -> None:
    t = table(k=["a", "a", "b", None], v=[1, None, 3, 4])
    g = t.group_by("k").agg(n=("v", "count"), rows=("v", "size"), s=("v", "sum"),
                            s2=("v", "sum"), u=("v", "nunique"), m=("v", "mean"))
    rows = {r["k"]: r for r in unwrap_table(g).to_pylist()}
    assert rows["a"] == {"k": "a", "n": 1, "rows": 2, "s": 1, "s2": 1, "u": 1, "m": 1.0}
    assert rows[None]["rows"] == 1
    assert isinstance(t.group_by("k"), GroupBy)
    assert sorted(values(t.distinct("k"), "k"), key=str) == sorted(["a", "b", None], key=str)
    with pytest.raises(ValueError):
        t.group_by("k").agg(n=("v", "median"))
    with pytest.raises(ValueError):
        t.group_by("k").agg(k=("v", "sum"))


def test_nulls_and_concat() -> None:
    t = table(a=[1, None], b=["x", None])
    assert unwrap_table(t.dropna()).num_rows == 1
    assert unwrap_table(t.dropna(["a"])).num_rows == 1
    assert values(t.fillna({"a": 0, "b": "?"}), "b") == ["x", "?"]
    assert derived(t, t["a"].fillna(9)) == [1, 9]
    both = concat([t, t.select("b", "a")])
    assert values(both, "a") == [1, None, 1, None]
    assert unwrap_table(t.concat(t)).num_rows == 4
    with pytest.raises(ValueError):
        concat([t, t.select("a")])


def test_nothing_can_be_read_out() -> None:
    t = table(secret=["s3cr3t"])
    col = t["secret"]
    for probe in (lambda: bool(t), lambda: bool(col), lambda: list(t), lambda: list(col),
                  lambda: "x" in col, lambda: "x" in t, lambda: len(t), lambda: {col: 1}):
        with pytest.raises(TypeError):
            probe()
    assert "s3cr3t" not in repr(t) + repr(col) + str(t) + str(col)
    with pytest.raises(TypeError):
        t.x = 1  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        col.x = 1  # type: ignore[attr-defined]
    with pytest.raises(KeyError):
        t["nope"]
    with pytest.raises(TypeError):
        t.with_column("x", object())
    with pytest.raises(TypeError):
        t.filter(t["secret"])  # not boolean


def test_unwrap_refuses_anything_but_a_table() -> None:
    with pytest.raises(TypeError):
        unwrap_table(pa.table({"a": [1]}))
