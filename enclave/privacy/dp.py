"""Thin, safe recipes over OpenDP: the only module of sealroom that imports ``opendp``.

Promises:

- The OpenDP feature set is exactly ``{"contrib"}``: it is enabled here at import, checked at
  import and checked again before every release (T49). Anything else enabled in the process
  (``honest-but-curious``, ``idealized-numerics``/``floating-point``, ...) makes every release
  raise ``PrivacyError``.
- All noise is integer (discrete Laplace) noise sampled by OpenDP's ``make_laplace`` or
  ``make_laplace_threshold`` over ``i64`` inputs; no float mechanism and no numpy randomness.
  Real-valued measures are released as fixed-point integers by the caller (see
  ``docs/privacy.md``).
- Sensitivities come from OpenDP stability maps (``make_count_distinct``, ``make_sum`` over
  bounded ``i64``) and privacy losses from OpenDP privacy maps. Every returned release states the
  epsilon (and delta) that OpenDP's map reports, never more than what was asked.

OpenDP's sampler is a CSPRNG and cannot be seeded; tests are statistical.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import opendp.prelude as dp

from sdk.errors import PrivacyError

FEATURES: frozenset[str] = frozenset({"contrib"})
OPENDP_VERSION = "0.16.0"
MAX_THRESHOLD = 2**30

dp.enable_features("contrib")


def check_feature_gate() -> None:
    """Raise ``PrivacyError`` unless OpenDP's enabled features are exactly ``{"contrib"}``."""
    enabled = frozenset(dp.GLOBAL_FEATURES)
    if enabled != FEATURES:
        extra = sorted(enabled - FEATURES)
        raise PrivacyError(f"OpenDP feature set must be exactly contrib (extra: {extra})")


check_feature_gate()


def float_at_most(value: Decimal) -> float:
    """The largest float not above ``value`` (privacy parameters never round up)."""
    f = float(value)
    if Decimal(f) > value:
        f = math.nextafter(f, -math.inf)
    return f


def _map(meas: dp.Measurement | dp.Transformation, d_in: object) -> Any:
    """OpenDP's privacy (or stability) map at ``d_in`` (typed wrapper)."""
    return meas.map(d_in)  # type: ignore[no-untyped-call]


def _invoke(meas: dp.Measurement, data: object) -> Any:
    """Run a measurement; an OpenDP failure (e.g. overflow) becomes ``PrivacyError`` naming only
    the failure kind, never a value."""
    try:
        return meas(data)
    except dp.OpenDPException as exc:
        raise PrivacyError(f"OpenDP refused the release ({exc.variant})") from None


def _vector_space() -> tuple[dp.Domain, dp.Metric]:
    return dp.vector_domain(dp.atom_domain(T=dp.i64)), dp.l1_distance(T=dp.i64)


def count_sensitivity(max_contributions: int) -> int:
    """L1 sensitivity of a distinct-unit count when a unit may change ``max_contributions`` rows.

    Taken from OpenDP's stability map of ``make_count_distinct`` under the symmetric distance.
    """
    t = dp.t.make_count_distinct(
        dp.vector_domain(dp.atom_domain(T=dp.String)), dp.symmetric_distance(), TO=dp.i64
    )
    return int(_map(t, max_contributions))


def sum_sensitivity(lower: int, upper: int, max_contributions: int) -> int:
    """L1 sensitivity of an integer sum of values in [lower, upper] under ``max_contributions``.

    Taken from OpenDP's stability map of ``make_sum`` over ``vector_domain(atom_domain(bounds,
    T=i64))`` with the symmetric distance (``max_contributions * max(|lower|, |upper|)``).
    """
    if lower == upper == 0:
        return 0
    domain = dp.vector_domain(dp.atom_domain(bounds=(lower, upper), T=dp.i64))
    return int(_map(dp.t.make_sum(domain, dp.symmetric_distance()), max_contributions))


def accuracy(scale: float, alpha: float) -> float:
    """OpenDP's discrete-Laplace accuracy: P(|noise| >= result) <= alpha (0 for no noise).

    Raises ``PrivacyError`` if OpenDP cannot compute it.
    """
    if scale == 0:
        return 0.0
    value = float(dp.discrete_laplacian_scale_to_accuracy(scale=scale, alpha=alpha))
    if math.isnan(value) or value == math.inf:
        raise PrivacyError("accuracy not computable for this noise scale")
    # OpenDP 0.16 returns -inf for scales below ~1e-4 (the noise is then almost surely 0).
    return max(value, 0.0)


@dataclass(frozen=True)
class NoisyRelease:
    """Integers released by one vector discrete-Laplace mechanism.

    ``scale`` is the noise scale in the integers' units; ``accuracy95`` is OpenDP's 95% accuracy
    (alpha = 0.05) for each value; ``epsilon`` is OpenDP's privacy map at ``sensitivity``.
    """

    values: tuple[int, ...]
    scale: float
    sensitivity: int
    accuracy95: float
    epsilon: Decimal


def scale_for(sensitivity: int, epsilon: Decimal) -> float:
    """The smallest scale (to within a few ulps) with OpenDP's ``map(sensitivity) <= epsilon``.

    The discrete Laplace map is ``sensitivity / scale``, so ``sensitivity / epsilon`` is the
    answer up to rounding: OpenDP's own map checks it, and the scale grows by a few ulps until
    it passes; OpenDP's binary search is the fallback (about 50 map evaluations, 30 ms).
    """
    if epsilon <= 0:
        raise PrivacyError("epsilon must be positive")
    if sensitivity == 0:
        return 0.0
    space = _vector_space()
    target = float_at_most(epsilon)
    guess = sensitivity / target
    try:
        scale = guess
        for _ in range(_ULP_STEPS):
            if _map(dp.m.make_laplace(*space, scale=scale), sensitivity) <= target:
                return scale
            scale = math.nextafter(scale, math.inf)
        return float(
            dp.binary_search_param(
                lambda s: dp.m.make_laplace(*space, scale=s),
                d_in=sensitivity,
                d_out=target,
                bounds=(guess / 2, guess * 2),
            )
        )
    except (dp.OpenDPException, ValueError) as exc:
        raise PrivacyError("OpenDP found no noise scale for this epsilon") from exc


_ULP_STEPS = 8


def noisy_vector(values: Sequence[int], sensitivity: int, epsilon: Decimal) -> NoisyRelease:
    """Release ``values`` (an integer vector whose L1 sensitivity is ``sensitivity``) with
    epsilon-DP through OpenDP's ``make_laplace`` on ``vector_domain(atom_domain(i64))``.

    Raises ``PrivacyError`` if the feature gate is not exactly contrib or epsilon is not
    positive. A zero sensitivity (a measure bounded to [0, 0]) is released as is.
    """
    check_feature_gate()
    scale = scale_for(sensitivity, epsilon)
    ints = [int(v) for v in values]
    if sensitivity == 0:
        return NoisyRelease(tuple(ints), 0.0, 0, 0.0, Decimal(0))
    meas = dp.m.make_laplace(*_vector_space(), scale=scale)
    spent = Decimal(_map(meas, sensitivity))
    if spent > epsilon:  # pragma: no cover - binary_search_param guarantees it
        raise PrivacyError("internal: privacy map above the allotted epsilon")
    out = _invoke(meas, ints) if ints else []
    return NoisyRelease(
        tuple(int(v) for v in out), scale, sensitivity, accuracy(scale, 0.05), spent
    )


def noisy_counts(values: Sequence[int], sensitivity: int, epsilon: Decimal) -> NoisyRelease:
    """Distinct-unit counts released with epsilon-DP (see ``noisy_vector``)."""
    return noisy_vector(values, sensitivity, epsilon)


def noisy_sums(values: Sequence[int], sensitivity: int, epsilon: Decimal) -> NoisyRelease:
    """Fixed-point integer sums released with epsilon-DP (see ``noisy_vector``)."""
    return noisy_vector(values, sensitivity, epsilon)


@dataclass(frozen=True)
class ThresholdRelease:
    """Keys and noisy counts kept by OpenDP's ``make_laplace_threshold``.

    Only keys whose noisy count reached ``threshold`` are present. ``epsilon`` and ``delta`` are
    OpenDP's privacy map at (l0, l1, linf) = (k, k, 1) for k = max contributions.
    """

    counts: Mapping[str, int]
    scale: float
    threshold: int
    accuracy95: float
    epsilon: Decimal
    delta: Decimal


def threshold_counts(
    counts: Mapping[str, int],
    max_contributions: int,
    epsilon: Decimal,
    delta: Decimal,
    min_threshold: int,
) -> ThresholdRelease:
    """Release a map of distinct-unit counts whose keys are not public, with (epsilon, delta)-DP.

    A unit changes at most ``max_contributions`` keys by at most 1 each, so the map's distance is
    (l0, l1, linf) = (k, k, 1). The scale is the smallest meeting ``epsilon``; the threshold the
    smallest integer >= ``min_threshold`` whose delta (OpenDP's map) is at most ``delta``.

    Raises ``PrivacyError`` when ``delta`` is not positive (keys cannot be released without it),
    when no threshold up to 2^30 meets it, or when the feature gate is wrong.
    """
    check_feature_gate()
    if delta <= 0:
        raise PrivacyError("group keys without a public domain need delta > 0")
    k = max_contributions
    d_in = (k, k, 1)
    space = (
        dp.map_domain(dp.atom_domain(T=dp.String), dp.atom_domain(T=dp.i64)),
        dp.l01inf_distance(dp.absolute_distance(T=dp.i64)),
    )
    eps_f, delta_f = float_at_most(epsilon), float_at_most(delta)

    def make(scale: float, threshold: int) -> dp.Measurement:
        return dp.m.make_laplace_threshold(*space, scale=scale, threshold=threshold)

    guess = scale_for(k, epsilon)
    try:
        scale = float(
            dp.binary_search(
                lambda s: bool(_map(make(s, MAX_THRESHOLD), d_in)[0] <= eps_f),
                bounds=(guess / 2, guess * 2),
                T=float,
            )
        )
    except (dp.OpenDPException, ValueError) as exc:
        raise PrivacyError("OpenDP found no noise scale for this epsilon") from exc
    low = max(1, min_threshold)
    if _map(make(scale, MAX_THRESHOLD), d_in)[1] > delta_f:
        raise PrivacyError("delta too small for any threshold")
    if _map(make(scale, low), d_in)[1] <= delta_f:
        threshold = low
    else:
        threshold = int(
            dp.binary_search(
                lambda t: bool(_map(make(scale, int(t)), d_in)[1] <= delta_f),
                bounds=(low, MAX_THRESHOLD),
                T=int,
            )
        )
    meas = make(scale, threshold)
    eps_spent, delta_spent = (Decimal(x) for x in _map(meas, d_in))
    if eps_spent > epsilon or delta_spent > delta:  # pragma: no cover - guaranteed above
        raise PrivacyError("internal: privacy map above the allotted epsilon/delta")
    released = _invoke(meas, {str(key): int(v) for key, v in counts.items()}) if counts else {}
    return ThresholdRelease(
        counts={str(key): int(v) for key, v in released.items()},
        scale=scale,
        threshold=threshold,
        accuracy95=accuracy(scale, 0.05),
        epsilon=eps_spent,
        delta=delta_spent,
    )
