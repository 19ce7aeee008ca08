"""T40/T41/T48/T50 and the aggregate-mode rules, whatever the query code returned."""

from __future__ import annotations

import math
from decimal import Decimal

import pyarrow as pa
import pytest

from enclave.privacy import aggregate as agg_mod
from enclave.privacy import dp
from enclave.privacy.aggregate import COUNT_COLUMN, apply_output_spec
from sdk.errors import PrivacyError, ResourceError
from tests.privacy._util import spec


def _group_rows(group: str, units: list[str], reps: int = 1) -> list[tuple[str, str]]:
    return [(u, group) for u in units for _ in range(reps)]


def _table(pairs: list[tuple[str, str]], **extra: list[object]) -> pa.Table:
    return pa.table({"uid": [p[0] for p in pairs], "g": [p[1] for p in pairs], **extra})


def _units(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


# --- T40 / T41: a group of 49 distinct units under k = 50 never appears -------------------------


def test_t40_small_group_suppressed_big_group_released() -> None:
    pairs = _group_rows("small", _units("s", 49)) + _group_rows("big", _units("b", 60))
    result = apply_output_spec(_table(pairs), spec(group_by=[{"column": "g"}]), min_group_size=50)
    assert result.table.column("g").to_pylist() == ["big"]
    assert result.table.column(COUNT_COLUMN).to_pylist() == [60]
    assert result.suppressed_groups == 1


def test_t41_rows_repeated_per_unit_do_not_count() -> None:
    # 49 units, one of which has 500 rows: 548 rows, still 49 distinct units.
    pairs = _group_rows("small", _units("s", 49)) + _group_rows("small", ["s0"], reps=500)
    for k in (1, 3, 1000):
        out = apply_output_spec(
            _table(pairs), spec(group_by=[{"column": "g"}], max_contributions=k), min_group_size=50
        )
        assert out.table.num_rows == 0


def test_t41_fake_count_columns_are_ignored() -> None:
    pairs = _group_rows("small", _units("s", 49))
    table = _table(pairs, count=[10_000] * 49, n_units=[10_000] * 49, n=[99] * 49)
    out = apply_output_spec(table, spec(group_by=[{"column": "g"}]), min_group_size=50)
    assert out.table.num_rows == 0
    totals = apply_output_spec(table, spec(), min_group_size=50)
    assert totals.table.num_rows == 0 and totals.suppressed_groups == 1


def test_unit_spread_over_groups_is_bounded() -> None:
    # ten groups of 49 units, plus one unit present in all ten groups.
    pairs: list[tuple[str, str]] = []
    for g in range(10):
        pairs += _group_rows(f"g{g}", _units(f"u{g}-", 49)) + [("spreader", f"g{g}")]
    table = _table(pairs)
    one = apply_output_spec(table, spec(group_by=[{"column": "g"}]), min_group_size=50)
    assert one.table.num_rows == 1  # the spreader counts in one group only
    assert one.table.column(COUNT_COLUMN).to_pylist() == [50]
    ten = apply_output_spec(
        table, spec(group_by=[{"column": "g"}], max_contributions=10), min_group_size=50
    )
    assert ten.table.num_rows == 10
    three = apply_output_spec(
        table, spec(group_by=[{"column": "g"}], max_contributions=3), min_group_size=50
    )
    assert three.table.num_rows == 3


def test_bounding_choice_is_deterministic() -> None:
    pairs = [("u", f"g{i}") for i in range(20)] + _group_rows("g0", _units("x", 5))
    table = _table(pairs, v=list(range(25)))
    s = spec(
        group_by=[{"column": "g"}],
        measures=[{"name": "s", "column": "v", "agg": "sum", "lower": "0", "upper": "100"}],
        max_contributions=2,
    )
    first = apply_output_spec(table, s, min_group_size=1).table
    for _ in range(3):
        assert apply_output_spec(
            table.take(list(range(24, -1, -1))), s, min_group_size=1
        ).table.equals(first)


def test_totals_get_the_same_minimum() -> None:
    table = _table(_group_rows("x", _units("s", 49)))
    assert apply_output_spec(table, spec(), min_group_size=50).table.num_rows == 0
    table = _table(_group_rows("x", _units("s", 50)))
    out = apply_output_spec(table, spec(), min_group_size=50)
    assert out.table.column(COUNT_COLUMN).to_pylist() == [50]


def test_strictest_minimum_applies() -> None:
    table = _table(_group_rows("x", _units("s", 60)))
    assert apply_output_spec(table, spec(min_group_size=70), min_group_size=50).table.num_rows == 0
    assert apply_output_spec(table, spec(min_group_size=10), min_group_size=61).table.num_rows == 0
    assert apply_output_spec(table, spec(min_group_size=10), min_group_size=60).table.num_rows == 1


def test_null_units_are_dropped() -> None:
    table = pa.table({"uid": [None] * 100 + _units("s", 10), "g": ["x"] * 110})
    out = apply_output_spec(table, spec(group_by=[{"column": "g"}]), min_group_size=1)
    assert out.table.column(COUNT_COLUMN).to_pylist() == [10]


def test_domain_filters_rows_outside_it() -> None:
    pairs = _group_rows("a", _units("a", 60)) + _group_rows("secret", _units("z", 60))
    out = apply_output_spec(
        _table(pairs), spec(group_by=[{"column": "g", "domain": ["a", "b"]}]), min_group_size=50
    )
    assert out.table.column("g").to_pylist() == ["a"]
    assert out.suppressed_groups == 1  # "b" (empty), never "secret"


# --- T48: extreme values ------------------------------------------------------------------------


def test_t48_extreme_values_are_clamped_and_nulls_imputed() -> None:
    values = [1e308, -1e308, math.inf, -math.inf, math.nan, None, -0.0, 42.5]
    table = pa.table({"uid": _units("u", 8), "g": [str(i) for i in range(8)], "v": values})
    s = spec(
        group_by=[{"column": "g"}],
        measures=[{"name": "v_sum", "column": "v", "agg": "sum", "lower": "0", "upper": "100"}],
    )
    out = apply_output_spec(table, s, min_group_size=1).table
    assert out.column("v_sum").to_pylist() == [100.0, 0.0, 100.0, 0.0, 0.0, 0.0, 0.0, 42.5]
    neg = spec(
        measures=[{"name": "m", "column": "v", "agg": "mean", "lower": "-10", "upper": "10"}]
    )
    got = apply_output_spec(table, neg, min_group_size=1).table.column("m").to_pylist()[0]
    assert math.isfinite(got) and got == pytest.approx((10 - 10 + 10 - 10 + 0 + 0 + 0 + 10) / 8)


def test_t48_integer_extremes_and_types() -> None:
    table = pa.table(
        {
            "uid": ["a", "b", "c"],
            "g": ["1", "2", "3"],
            "v": pa.array([2**63 - 1, -(2**63), 3], pa.int64()),
            "flag": [True, False, True],
        }
    )
    s = spec(
        group_by=[{"column": "g"}],
        measures=[
            {"name": "v_sum", "column": "v", "agg": "sum", "lower": "-5", "upper": "5"},
            {"name": "f_mean", "column": "flag", "agg": "mean", "lower": "0", "upper": "1"},
        ],
    )
    out = apply_output_spec(table, s, min_group_size=1).table
    assert out.column("v_sum").to_pylist() == [5.0, -5.0, 3.0]
    assert out.column("f_mean").to_pylist() == [1.0, 0.0, 1.0]


def test_t48_dp_release_is_finite_with_one_unit_of_a_million_rows() -> None:
    table = pa.table({"uid": ["whale"] * 1_000_000 + _units("u", 200), "v": [1e308] * 1_000_200})
    s = spec(
        measures=[{"name": "v", "column": "v", "agg": "sum", "lower": "0", "upper": "10"}],
        dp={"epsilon": "20"},
    )
    out = apply_output_spec(table, s, min_group_size=50)
    (n,) = out.table.column(COUNT_COLUMN).to_pylist()
    (total,) = out.table.column("v").to_pylist()
    tol_n = dp.accuracy(out.noise[COUNT_COLUMN].scale, 1e-9)
    info = out.noise["v"]
    tol_s = dp.accuracy(info.scale, 1e-9) * float(info.quantum)
    assert abs(n - 201) <= tol_n
    assert math.isfinite(total) and abs(total - 2010.0) <= tol_s


def test_non_numeric_measure_refused() -> None:
    table = pa.table({"uid": ["a"], "v": ["12"]})
    s = spec(measures=[{"name": "m", "column": "v", "agg": "sum", "lower": "0", "upper": "1"}])
    with pytest.raises(PrivacyError):
        apply_output_spec(table, s)


def test_missing_columns_refused() -> None:
    with pytest.raises(PrivacyError) as err:
        apply_output_spec(pa.table({"x": [1]}), spec(group_by=[{"column": "g"}]))
    assert err.value.code == "E_PRIVACY"


# --- T50: fixed-point sums at large n -----------------------------------------------------------


def test_t50_large_n_fixed_point_sum_is_exact() -> None:
    n = 2**21 + 7
    table = pa.table({"uid": pa.array(range(n), pa.int64()), "v": pa.array([3.25] * n)})
    measures = [{"name": "s", "column": "v", "agg": "sum", "lower": "0", "upper": "1000"}]
    exact = apply_output_spec(table, spec(measures=measures))
    assert exact.table.column("s").to_pylist() == [3.25 * n]
    noisy = apply_output_spec(table, spec(measures=measures, dp={"epsilon": "1"}))
    info = noisy.noise["s"]
    tol = dp.accuracy(info.scale, 1e-9) * float(info.quantum)
    assert abs(noisy.table.column("s").to_pylist()[0] - 3.25 * n) <= tol
    # the sensitivity is OpenDP's stability map of an i64 sum: max|bound| in fixed units
    assert info.scale == pytest.approx(dp.sum_sensitivity(0, 1_000_000, 1) / 0.5)


def test_fixed_point_overflow_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agg_mod, "MAX_FIXED_SUM", 10**6)
    table = pa.table({"uid": ["a", "b"], "v": [1.0, 2.0]})
    s = spec(measures=[{"name": "s", "column": "v", "agg": "sum", "lower": "0", "upper": "100"}])
    with pytest.raises(ResourceError):
        apply_output_spec(table, s)


# --- domains, thresholding, caps ----------------------------------------------------------------


def test_dp_without_domain_needs_delta() -> None:
    table = _table(_group_rows("a", _units("a", 60)))
    with pytest.raises(PrivacyError):
        apply_output_spec(table, spec(group_by=[{"column": "g"}], dp={"epsilon": "1"}))
    out = apply_output_spec(
        table, spec(group_by=[{"column": "g"}], dp={"epsilon": "1", "delta": "0.000001"})
    )
    assert out.threshold is not None and out.threshold >= 50
    assert out.delta_charged == Decimal("0.000001")


def test_public_domain_cells_without_rows_are_noised_not_dropped() -> None:
    # An empty declared cell gets a noisy count like any other: with noise scale 100 and
    # k = 1 it is released about half of the time; in 60 runs it must show up
    # (P(never) ~ 2^-60) and must be absent sometimes (same bound).
    table = _table(_group_rows("a", _units("a", 5)))
    s = spec(group_by=[{"column": "g", "domain": ["a", "empty"]}], dp={"epsilon": "0.01"})
    seen = [apply_output_spec(table, s, min_group_size=1) for _ in range(60)]
    shown = ["empty" in r.table.column("g").to_pylist() for r in seen]
    assert any(shown) and not all(shown)
    assert all(r.suppressed_groups + r.table.num_rows == 2 for r in seen)


def test_domain_product_above_max_groups_refused() -> None:
    table = _table(_group_rows("a", _units("a", 60)))
    dom = [str(i) for i in range(101)]
    s = spec(group_by=[{"column": "g", "domain": dom}, {"column": "uid", "domain": dom}])
    with pytest.raises(ResourceError):
        apply_output_spec(table, s)


def test_released_groups_above_max_groups_are_truncated_not_failed() -> None:
    # failing would make "more than max_groups groups" a run status: one bit of the data
    pairs: list[tuple[str, str]] = []
    for g in range(5):
        pairs += _group_rows(f"g{g}", _units(f"u{g}-", 3))
    out = apply_output_spec(
        _table(pairs), spec(group_by=[{"column": "g"}], max_groups=4), min_group_size=1
    )
    assert out.truncated and out.table.column("g").to_pylist() == ["g0", "g1", "g2", "g3"]


def test_threshold_mode_releases_only_big_keys() -> None:
    pairs = _group_rows("big", _units("b", 400)) + _group_rows("tiny", _units("t", 2))
    s = spec(group_by=[{"column": "g"}], dp={"epsilon": "2", "delta": "0.0000001"})
    out = apply_output_spec(_table(pairs), s)
    assert out.table.column("g").to_pylist() == ["big"]
    assert out.epsilon_charged == 2


def test_null_group_values_are_a_group_of_their_own() -> None:
    table = pa.table({"uid": _units("u", 400), "g": [None] * 200 + ["x"] * 200})
    exact = apply_output_spec(table, spec(group_by=[{"column": "g"}]))
    assert exact.table.column("g").to_pylist() == ["x", None]
    s = spec(group_by=[{"column": "g"}], dp={"epsilon": "2", "delta": "0.000001"})
    assert apply_output_spec(table, s).table.column("g").to_pylist() == ["x", None]
    public = spec(group_by=[{"column": "g", "domain": ["x"]}])
    assert apply_output_spec(table, public).table.column("g").to_pylist() == ["x"]
