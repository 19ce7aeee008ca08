"""The released noise has the declared distribution; T49 feature gate; OpenDP-derived bounds.

OpenDP samples from a CSPRNG that cannot be seeded, so the checks are statistical with a fixed
sample size and a tolerance derived from the distribution at a false-alarm rate of 1e-6
(two-sided normal quantile 4.892), never tuned to pass.
"""

from __future__ import annotations

import math
from decimal import Decimal

import opendp.prelude as opendp
import pyarrow as pa
import pytest

from enclave.privacy import dp
from enclave.privacy.aggregate import COUNT_COLUMN, apply_output_spec
from sdk.errors import PrivacyError
from tests.privacy._util import spec

Z = 4.892  # P(|N(0,1)| > Z) = 1e-6
N = 20_000


def discrete_laplace_moments(scale: float) -> tuple[float, float]:
    """(variance, fourth moment) of the discrete Laplace with P(x) ∝ p^|x|, p = exp(-1/scale).

    From sum x^2 p^x = p(1+p)/(1-p)^3 and sum x^4 p^x = p(1+11p+11p^2+p^3)/(1-p)^5 over x >= 1,
    with normalising constant (1-p)/(1+p).
    """
    p = math.exp(-1.0 / scale)
    q = -math.expm1(-1.0 / scale)  # 1 - p without cancellation
    var = 2 * p / q**2
    m4 = 2 * p * (1 + 11 * p + 11 * p**2 + p**3) / ((1 + p) * q**4)
    return var, m4


def test_moments_formula_against_a_direct_sum() -> None:
    scale = 3.0
    p = math.exp(-1 / scale)
    pmf = [(1 - p) / (1 + p) * p ** abs(x) for x in range(-400, 401)]
    var = sum(w * x**2 for w, x in zip(pmf, range(-400, 401)))
    m4 = sum(w * x**4 for w, x in zip(pmf, range(-400, 401)))
    assert discrete_laplace_moments(scale) == pytest.approx((var, m4), rel=1e-9)


def check_sample(noise: list[int], scale: float) -> None:
    """Mean 0 and variance of the discrete Laplace(scale), CLT bounds at 1e-6."""
    n = len(noise)
    var, m4 = discrete_laplace_moments(scale)
    mean = sum(noise) / n
    assert abs(mean) <= Z * math.sqrt(var / n)
    sample_var = sum((x - mean) ** 2 for x in noise) / (n - 1)
    assert abs(sample_var - var) <= Z * math.sqrt((m4 - var**2) / n)


def test_vector_laplace_has_declared_scale() -> None:
    rel = dp.noisy_counts([0] * N, sensitivity=1, epsilon=Decimal("0.2"))
    assert rel.scale == pytest.approx(5.0, rel=1e-9)  # scale = sensitivity / epsilon
    assert rel.epsilon <= Decimal("0.2")
    check_sample(list(rel.values), rel.scale)
    # OpenDP's 95% accuracy: at most 5% of draws at or beyond it (binomial bound at 1e-6)
    beyond = sum(abs(v) >= rel.accuracy95 for v in rel.values)
    assert beyond <= N * 0.05 + Z * math.sqrt(N * 0.05 * 0.95)


def test_sum_sensitivity_drives_the_scale() -> None:
    sens = dp.sum_sensitivity(-3, 7, 4)
    assert sens == 28  # 4 contributions * max(|-3|, |7|), from OpenDP's stability map
    rel = dp.noisy_sums([1000] * N, sensitivity=sens, epsilon=Decimal("2"))
    assert rel.scale == pytest.approx(14.0, rel=1e-9)
    check_sample([v - 1000 for v in rel.values], rel.scale)


def test_end_to_end_scale_with_epsilon_split() -> None:
    # 4000 public cells of exactly 60 units each, one measure: epsilon 1 is split in two,
    # counts get scale k / 0.5 = 2, sums of 1.0 (bounds [0, 1], q = 1e-6) scale 2e6 units.
    cells = 4000
    uid = [f"u{c}-{i}" for c in range(cells) for i in range(60)]
    g = [str(c) for c in range(cells) for _ in range(60)]
    table = pa.table({"uid": uid, "g": g, "v": [1.0] * len(uid)})
    s = spec(
        group_by=[{"column": "g", "domain": [str(c) for c in range(cells)]}],
        measures=[{"name": "s", "column": "v", "agg": "sum", "lower": "0", "upper": "1"}],
        dp={"epsilon": "1"},
    )
    out = apply_output_spec(table, s, min_group_size=1)
    assert out.table.num_rows == cells
    assert out.noise[COUNT_COLUMN].scale == pytest.approx(2.0, rel=1e-9)
    assert out.noise["s"].scale == pytest.approx(2e6, rel=1e-9)
    check_sample([n - 60 for n in out.table.column(COUNT_COLUMN).to_pylist()], 2.0)
    sums = [round((v - 60) * 1e6) for v in out.table.column("s").to_pylist()]
    check_sample(sums, 2e6)
    assert out.accuracy[COUNT_COLUMN] == str(int(dp.accuracy(2.0, 0.05)))


def test_threshold_mechanism_parameters() -> None:
    rel = dp.threshold_counts({"a": 10_000}, 1, Decimal("1"), Decimal("0.000001"), 50)
    assert rel.epsilon <= 1 and rel.delta <= Decimal("0.000001")
    assert rel.threshold >= 50 and set(rel.counts) == {"a"}
    with pytest.raises(PrivacyError):
        dp.threshold_counts({"a": 1}, 1, Decimal("1"), Decimal(0), 50)


def test_float_at_most_never_rounds_up() -> None:
    for text in ("0.1", "0.3", "1.000000000000000001", "0.000000000000000001"):
        assert Decimal(dp.float_at_most(Decimal(text))) <= Decimal(text)


# --- T49 ----------------------------------------------------------------------------------------


def test_t49_feature_set_is_exactly_contrib() -> None:
    assert dp.FEATURES == frozenset({"contrib"})
    assert set(opendp.GLOBAL_FEATURES) == {"contrib"}
    dp.check_feature_gate()


@pytest.mark.filterwarnings("ignore:.*floating-point.*:DeprecationWarning")
@pytest.mark.parametrize("feature", ["honest-but-curious", "idealized-numerics", "floating-point"])
def test_t49_extra_feature_refuses_every_dp_release(feature: str) -> None:
    table = pa.table({"uid": [f"u{i}" for i in range(100)]})
    opendp.enable_features(feature)
    try:
        with pytest.raises(PrivacyError) as err:
            apply_output_spec(table, spec(dp={"epsilon": "1"}))
        assert err.value.code == "E_PRIVACY"
        with pytest.raises(PrivacyError):
            dp.noisy_counts([1], 1, Decimal(1))
    finally:
        opendp.disable_features(feature)
    assert set(opendp.GLOBAL_FEATURES) == {"contrib"}
