"""Apply a signed output spec to the runner's row-level table: the platform's privacy rules.

``apply_output_spec`` is what the supervisor calls between "the runner returned a table" and
"seal the outputs". It trusts nothing the query code computed: contribution bounding, clamping,
distinct-unit counting, suppression and noise are all done here (DESIGN §6, docs/privacy.md).

Errors never carry a data value: messages name spec columns and counts of groups only.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, localcontext

import pyarrow as pa

from enclave.privacy import dp
from enclave.privacy._exact import ExactAggregate, GroupKeyValue, exact_aggregate
from enclave.privacy.fixedpoint import MAX_FIXED_SUM, FixedPoint, measure_fixed_points
from enclave.privacy.listmode import apply_list_mode
from sdk.errors import PrivacyError, ResourceError
from sdk.protocol import policy
from sdk.protocol.budget import run_cost
from sdk.protocol.spec import OutputSpec

COUNT_COLUMN = "n_units"
MAX_EXACT_GROUPS = 1_000_000


@dataclass(frozen=True)
class NoiseInfo:
    """How one released column was noised: ``scale`` in integer units of ``quantum`` (1 for
    counts); ``bound`` is max(|L|, |U|) of a measure (1 for counts); 0 scale means no noise."""

    scale: float
    quantum: Decimal
    bound: Decimal


@dataclass(frozen=True)
class PrivacyResult:
    """What may leave the worker, and what it cost.

    ``suppressed_groups`` is for the platform's own tests: it is exact and data-dependent, so it
never leaves the worker. ``truncated``: more than ``max_groups`` groups passed and only the
first ones in key order are released.

    ``table``: group columns (strings), ``n_units`` (int64) and one float64 column per measure,
    sorted by group key (list mode: the one identifier column, sorted). ``accuracy``: per released
    column, OpenDP's 95% accuracy as a decimal string (for means: the worst-case 95% bound over
    the released groups, see docs/privacy.md); empty without DP. ``epsilon_charged`` and
    ``delta_charged`` equal ``cost.run_cost(spec)``.
    """

    table: pa.Table
    suppressed_groups: int
    epsilon_charged: Decimal
    delta_charged: Decimal
    accuracy: Mapping[str, str]
    mechanism: str
    noise: Mapping[str, NoiseInfo] = field(default_factory=dict)
    threshold: int | None = None
    truncated: bool = False


def _check_columns(table: pa.Table, spec: OutputSpec) -> None:
    names = set(table.column_names)
    wanted = [spec.privacy_unit, *(g.column for g in spec.group_by)]
    wanted += [m.column for m in spec.measures]
    missing = sorted({c for c in wanted if c not in names})
    if missing:
        raise PrivacyError(f"query output lacks declared column(s) {missing}")
    if COUNT_COLUMN in {g.column for g in spec.group_by} | {m.name for m in spec.measures}:
        raise PrivacyError(f"{COUNT_COLUMN!r} is reserved for the platform's count")


def split_epsilon(epsilon: Decimal, parts: int) -> Decimal:
    """Epsilon of each of ``parts`` releases under sequential composition (rounded down)."""
    with localcontext() as ctx:
        ctx.prec = 60
        ctx.rounding = ROUND_FLOOR
        return epsilon / parts


def _round_float(value: Decimal, places: int) -> float:
    with localcontext() as ctx:
        ctx.prec = 80
        return float(value.quantize(Decimal(1).scaleb(-places), ROUND_HALF_EVEN))


def _fmt(value: Decimal | float, places: int = 6) -> str:
    d = Decimal(repr(value)) if isinstance(value, float) else value
    with localcontext() as ctx:
        ctx.prec = 80
        return format(d.quantize(Decimal(1).scaleb(-places), ROUND_HALF_EVEN).normalize(), "f")


def _mean_bound(sum_scale: float, count_scale: float, bound: int, count: int) -> float:
    """95% bound (fixed-point units) on |S'/N' - S/N| given the released count N' (union bound
    over the two noises at alpha = 0.025 each): (acc_S + bound * acc_N) / N'."""
    a_s = dp.accuracy(sum_scale, 0.025)
    a_n = dp.accuracy(count_scale, 0.025)
    return (a_s + bound * a_n) / max(count, 1)


def apply_output_spec(
    table: pa.Table,
    spec: OutputSpec,
    *,
    min_group_size: int = policy.DEFAULT_MIN_GROUP_SIZE,
    recipient_ids: pa.Array | pa.ChunkedArray | None = None,
) -> PrivacyResult:
    """Enforce ``spec`` on the runner's row-level ``table`` and return what may be released.

    ``min_group_size`` is the run's effective minimum group size
    (:func:`sdk.protocol.policy.effective_min_group_size`; ``policy.DEFAULT_MIN_GROUP_SIZE``
    when not given); the spec's own applies too when stricter (``policy.strictest``).
    ``recipient_ids`` (list mode only) holds the identifiers of the single recipient's own
    upload.

    Raises ``PrivacyError`` (E_PRIVACY) for a missing column, a non-numeric measure, a wrong
    OpenDP feature set, DP group keys without a domain and without delta, DP in list mode, or a
    list below its minimum size; ``ResourceError`` (E_RESOURCE) when the groups exceed
    ``spec.max_groups`` or the fixed-point sums could overflow.
    """
    k_min = policy.strictest(min_group_size, spec.min_group_size)
    if spec.mode == "list":
        listed = apply_list_mode(table, spec, min_size=k_min, recipient_ids=recipient_ids)
        return PrivacyResult(listed, 0, Decimal(0), Decimal(0), {}, "list: intersection only")
    if spec.mode != "aggregate":
        raise PrivacyError("unknown output mode")
    if spec.dp is not None:
        dp.check_feature_gate()
        public = all(g.domain is not None for g in spec.group_by)
        if not public and spec.delta <= 0:
            raise PrivacyError("DP group keys without a public domain need delta > 0")
    _check_columns(table, spec)
    cells: list[GroupKeyValue] | None = None
    if all(g.domain is not None for g in spec.group_by):
        n_cells = 1
        for g in spec.group_by:
            n_cells *= len(g.domain or ())
        if n_cells > spec.max_groups:
            raise ResourceError("declared group domains exceed max_groups")
        cells = list(itertools.product(*(g.domain or () for g in spec.group_by)))
    fixed = [FixedPoint.from_bounds(Decimal(m.lower), Decimal(m.upper)) for m in spec.measures]
    biggest = max([fp.max_abs for fp in fixed] + [1])
    if table.num_rows * biggest >= MAX_FIXED_SUM:
        raise ResourceError("too many rows for exact fixed-point sums")
    exact = exact_aggregate(
        table,
        unit=spec.privacy_unit,
        group_columns=[g.column for g in spec.group_by],
        measures=[(m.column, fp) for m, fp in zip(spec.measures, fixed, strict=True)],
        max_contributions=spec.max_contributions,
        domains=[g.domain for g in spec.group_by],
        max_exact_groups=MAX_EXACT_GROUPS,
    )
    if spec.dp is None:
        return _release_exact(exact, spec, fixed, cells, k_min)
    return _release_dp(exact, spec, fixed, cells, k_min, spec.max_contributions)


def release_groups(
    groups: pa.Table,
    spec: OutputSpec,
    *,
    min_group_size: int,
    contribution_bound: int,
    reserved_epsilon: Decimal = Decimal(0),
) -> PrivacyResult:
    """Release the exact per-group aggregates a query plan computed
    (:func:`sdk.protocol.plan.compile_duckdb` with the fixed-point mapping of
    :func:`measure_fixed_points`): group columns (text) named as ``spec.group_by``,
    ``__units`` (distinct persons) and one fixed-point sum per ``spec.measures`` entry.

    ``contribution_bound`` is the plan's ``neighbour_factor * max_contributions``: the L1
    change one person can make, which the noise is calibrated to. Groups outside a declared
    domain are dropped; there is no data-dependent cap on candidates (they are bounded by the
    declared row counts), and releasing more than ``spec.max_groups`` keeps the first ones in
    key order (``truncated``) instead of failing.

    Raises ``PrivacyError`` for a wrong OpenDP feature set or DP keys without a public domain
    and without delta; never for a property of the data. With DP, ``reserved_epsilon`` of the
    run's epsilon is left for another release of the same run (the match rate) and the rest
    split over the cells' releases.
    """
    k_min = policy.strictest(min_group_size, spec.min_group_size)
    if spec.dp is not None:
        dp.check_feature_gate()
        if not all(g.domain is not None for g in spec.group_by) and spec.delta <= 0:
            raise PrivacyError("DP group keys without a public domain need delta > 0")
    n_cells = 1
    for g in spec.group_by:
        n_cells *= len(g.domain) if g.domain is not None else 1
    if n_cells > spec.max_groups:
        raise ResourceError("declared group domains exceed max_groups")
    fixed = measure_fixed_points(spec)
    names = [g.column for g in spec.group_by]
    domains = [None if g.domain is None else set(g.domain) for g in spec.group_by]
    columns = [groups.column(n).to_pylist() for n in names]
    units = groups.column("__units").to_pylist()
    sums = [groups.column(m.name).to_pylist() for m in spec.measures]
    exact: dict[GroupKeyValue, tuple[int, tuple[int, ...]]] = {}
    for row in range(groups.num_rows):
        key = tuple(None if c[row] is None else str(c[row]) for c in columns)
        if any(d is not None and (v is None or v not in d)
               for v, d in zip(key, domains, strict=True)):
            continue
        exact[key] = (int(units[row]), tuple(int(s[row] or 0) for s in sums))
    cells: list[GroupKeyValue] | None = None
    if all(g.domain is not None for g in spec.group_by):
        cells = list(itertools.product(*(g.domain or () for g in spec.group_by)))
    aggregate = ExactAggregate(exact)
    if spec.dp is None:
        return _release_exact(aggregate, spec, fixed, cells, k_min)
    return _release_dp(aggregate, spec, fixed, cells, k_min, contribution_bound,
                       reserved_epsilon)


def _truncate(released: list[tuple[GroupKeyValue, int, tuple[int, ...]]], limit: int
              ) -> tuple[list[tuple[GroupKeyValue, int, tuple[int, ...]]], bool]:
    """At most ``limit`` released groups, the first in key order; whether any were cut."""
    if len(released) <= limit:
        return released, False
    return sorted(released, key=lambda r: _key_order(r[0]))[:limit], True


def _release_exact(
    exact: ExactAggregate,
    spec: OutputSpec,
    fixed: Sequence[FixedPoint],
    cells: list[GroupKeyValue] | None,
    k_min: int,
) -> PrivacyResult:
    keys = cells if cells is not None else list(exact.groups)
    released: list[tuple[GroupKeyValue, int, tuple[int, ...]]] = []
    for key in keys:
        n, sums = exact.groups.get(key, (0, tuple(0 for _ in fixed)))
        if n >= k_min:
            released.append((key, n, sums))
    released, truncated = _truncate(released, spec.max_groups)
    table = _build_table(spec, fixed, released)
    return PrivacyResult(
        table=table,
        truncated=truncated,
        suppressed_groups=len(keys) - len(released),
        epsilon_charged=Decimal(0),
        delta_charged=Decimal(0),
        accuracy={},
        mechanism=f"exact aggregates; minimum group size {k_min} on distinct units; no noise",
    )


def _release_dp(
    exact: ExactAggregate,
    spec: OutputSpec,
    fixed: Sequence[FixedPoint],
    cells: list[GroupKeyValue] | None,
    k_min: int,
    k: int,
    reserved: Decimal = Decimal(0),
) -> PrivacyResult:
    if not Decimal(0) <= reserved < spec.epsilon:  # pragma: no cover - a share below one
        raise PrivacyError("internal: reserved epsilon outside the run's epsilon")
    eps_part = split_epsilon(spec.epsilon - reserved, 1 + len(spec.measures))
    zero = tuple(0 for _ in fixed)
    spent_eps = Decimal(0)
    spent_delta = Decimal(0)
    threshold: int | None = None
    if cells is not None:
        count_rel = dp.noisy_counts(
            [exact.groups.get(c, (0, zero))[0] for c in cells], dp.count_sensitivity(k), eps_part
        )
        keys, counts = cells, list(count_rel.values)
        count_scale, count_acc = count_rel.scale, count_rel.accuracy95
        spent_eps += count_rel.epsilon
        keys_text = "public domain (every declared cell released, empty ones too)"
    else:
        encoded = {json.dumps(list(key)): n for key, (n, _) in exact.groups.items()}
        thr = dp.threshold_counts(encoded, k, eps_part, spec.delta, k_min)
        keys = sorted((tuple(json.loads(s)) for s in thr.counts), key=_key_order)
        counts = [thr.counts[json.dumps(list(key))] for key in keys]
        count_scale, count_acc, threshold = thr.scale, thr.accuracy95, thr.threshold
        spent_eps += thr.epsilon
        spent_delta += thr.delta
        keys_text = f"DP thresholding (make_laplace_threshold, threshold {thr.threshold})"
    noisy_sums: list[tuple[int, ...]] = []
    noise: dict[str, NoiseInfo] = {COUNT_COLUMN: NoiseInfo(count_scale, Decimal(1), Decimal(1))}
    accuracy = {COUNT_COLUMN: _fmt(Decimal(int(count_acc)), 0)}
    sum_scales: list[float] = []
    for i, (m, fp) in enumerate(zip(spec.measures, fixed, strict=True)):
        rel = dp.noisy_sums(
            [exact.groups.get(key, (0, zero))[1][i] for key in keys],
            dp.sum_sensitivity(fp.lower, fp.upper, k),
            eps_part,
        )
        spent_eps += rel.epsilon
        noisy_sums.append(rel.values)
        sum_scales.append(rel.scale)
        noise[m.name] = NoiseInfo(rel.scale, fp.quantum, fp.to_real(fp.max_abs))
        if m.agg == "sum":
            accuracy[m.name] = _fmt(fp.to_real(int(rel.accuracy95)), fp.places)
    if spent_eps + reserved > spec.epsilon or spent_delta > spec.delta:  # pragma: no cover
        raise PrivacyError("internal: composed privacy loss above the declared budget")
    released: list[tuple[GroupKeyValue, int, tuple[int, ...]]] = []
    for j, key in enumerate(keys):
        if counts[j] >= k_min:
            released.append((key, counts[j], tuple(col[j] for col in noisy_sums)))
    released, truncated = _truncate(released, spec.max_groups)
    smallest = min((n for _, n, _ in released), default=0)
    for m, fp, s_scale in zip(spec.measures, fixed, sum_scales, strict=True):
        if m.agg == "mean":
            bound = _mean_bound(s_scale, count_scale, fp.max_abs, smallest) if released else 0.0
            accuracy[m.name] = _fmt(fp.to_real(Decimal(repr(bound))), fp.places)
    eps_cost, delta_cost = run_cost(spec)
    mechanism = (
        f"OpenDP {dp.OPENDP_VERSION} discrete Laplace (make_laplace, vector L1) on exact "
        f"fixed-point aggregates; keys: {keys_text}; epsilon {spec.epsilon - reserved} split "
        f"evenly over {1 + len(spec.measures)} releases (counts + one per measure, sequential "
        f"composition){f', {reserved} more for the match rate' if reserved else ''}; "
        f"max {k} contribution(s) per unit; minimum group size {k_min} on the noisy count"
    )
    return PrivacyResult(
        table=_build_table(spec, fixed, released),
        truncated=truncated,
        suppressed_groups=len(keys) - len(released),
        epsilon_charged=eps_cost,
        delta_charged=delta_cost,
        accuracy=accuracy,
        mechanism=mechanism,
        noise=noise,
        threshold=threshold,
    )


def _key_order(key: GroupKeyValue) -> tuple[tuple[bool, str], ...]:
    """Sort order of group keys: by text, nulls last."""
    return tuple((v is None, v or "") for v in key)


def _build_table(
    spec: OutputSpec,
    fixed: Sequence[FixedPoint],
    released: Sequence[tuple[GroupKeyValue, int, tuple[int, ...]]],
) -> pa.Table:
    ordered = sorted(released, key=lambda r: _key_order(r[0]))
    columns: dict[str, pa.Array] = {}
    for i, g in enumerate(spec.group_by):
        columns[g.column] = pa.array([r[0][i] for r in ordered], type=pa.string())
    columns[COUNT_COLUMN] = pa.array([r[1] for r in ordered], type=pa.int64())
    for i, (m, fp) in enumerate(zip(spec.measures, fixed, strict=True)):
        values: list[float] = []
        for _, n, sums in ordered:
            if m.agg == "sum":
                values.append(_round_float(fp.to_real(sums[i]), fp.places))
            else:
                with localcontext() as ctx:
                    ctx.prec = 60
                    mean = Decimal(sums[i]) / Decimal(max(n, 1))
                mean = min(max(mean, Decimal(fp.lower)), Decimal(fp.upper))
                values.append(_round_float(fp.to_real(mean), fp.places))
        columns[m.name] = pa.array(values, type=pa.float64())
    return pa.table(columns)


__all__ = [
    "COUNT_COLUMN",
    "NoiseInfo",
    "PrivacyResult",
    "apply_output_spec",
    "measure_fixed_points",
    "release_groups",
    "split_epsilon",
]
