"""Ready-made bundles for the seed's three analyses (DESIGN §6), with validated parameters.

Each template turns a parameter mapping into a ``TemplateBundle``: a query plan
(:mod:`sdk.protocol.plan`: the person is the unit, the platform bounds, aggregates and noises),
the ``OutputSpec`` that plan implies, and the name of the post-processing that derives the
headline figures from the released (already protected) table. The columns a template reads
must have the right roles in the manifest (``dimension`` for group keys, ``measure`` for
measured values); the plan is refused otherwise, naming the column. Post-processing (in the worker, ``enclave.privacy._post``)
never sees row-level data, so it costs no privacy. This module is pure: parties generate and
review template bundles with it, and the worker regenerates the code to compare, without pandas,
DuckDB or OpenDP. Parameter errors raise ``InputError`` (E_INPUT).

Derived figures come back as a long table (figure, value, ci95_low, ci95_high). The interval
covers the DP noise only (not sampling error), at 95% by a union bound over the noise terms
involved; it is null without DP or when a needed cell was suppressed (then the value is null too).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from sdk.errors import InputError
from sdk.protocol.fields import check_decimal, check_name
from sdk.protocol.plan import Call, Col, Expr, Join, Lit, Plan, PlanGroup, PlanMeasure
from sdk.protocol.planoutput import plan_output
from sdk.protocol.spec import DPSpec, OutputSpec

DATASET_PARAMS = {
    "left": "left_id",
    "right": "right_id",
    "exposure": "exposure_id",
    "conversions": "conversion_id",
    "accounts": "accounts_id",
    "attributes": "attributes_id",
}
"""Template parameter naming a dataset → the parameter naming that dataset's id column."""

SIDE_DOMAIN = ("both", "left_only", "right_only")
EXPOSED_DOMAIN = ("0", "1")


@dataclass(frozen=True)
class TemplateBundle:
    """A template instantiated with parameters: what the bundle carries."""

    kind: str
    code: str
    output: OutputSpec
    post: str
    plan: Plan


COUNT = PlanMeasure("n_units", "count")


def _template(plan: Plan, post: str, *, dp: DPSpec | None, min_group_size: int | None,
              max_groups: int = 10_000) -> TemplateBundle:
    privacy = OutputSpec(mode=plan.release, privacy_unit="person", dp=dp,
                         min_group_size=min_group_size, max_groups=max_groups)
    return TemplateBundle("template", "", plan_output(plan, privacy), post, plan)


def _positive(value: Expr) -> Expr:
    """1 when ``value`` (0/1, an integer or a boolean) is above 0, else 0."""
    return Call("if", (Call("gt", (Call("to_int", (value,)), Lit(0))), Lit(1), Lit(0)))


def _name(params: Mapping[str, object], key: str, default: str | None = None) -> str:
    value = params.get(key, default)
    if value is None:
        raise InputError(f"template parameter {key!r} is required")
    return check_name(value, f"params.{key}")


def _dp(params: Mapping[str, object], *, required: bool) -> DPSpec | None:
    eps = params.get("epsilon")
    if eps is None:
        if required:
            raise InputError("template parameter 'epsilon' is required")
        return None
    data: dict[str, object] = {"epsilon": eps}
    if params.get("delta") is not None:
        data["delta"] = params["delta"]
    return DPSpec.from_dict(data)


def _min_size(params: Mapping[str, object]) -> int | None:
    value = params.get("min_group_size")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError("params.min_group_size: expected a positive integer")
    return value


def _check_keys(params: Mapping[str, object], allowed: set[str]) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise InputError(f"unknown template parameter(s) {unknown}")


def overlap(params: Mapping[str, object]) -> TemplateBundle:
    """Overlap of two parties' identifiers and each party's match rate.

    Params: ``left``, ``right`` (dataset names), ``left_id``, ``right_id`` (identifier columns,
    default "id"), optional ``epsilon``, ``min_group_size``. Each distinct identifier is one unit
    in exactly one of the public cells both / left_only / right_only; post-processing derives
    left count = both + left_only, right count = both + right_only, match rate = both / count.
    """
    _check_keys(
        params, {"left", "right", "left_id", "right_id", "epsilon", "delta", "min_group_size"}
    )
    left, right = _name(params, "left"), _name(params, "right")
    if left == right:
        raise InputError("overlap needs two different datasets")
    _name(params, "left_id", "id"), _name(params, "right_id", "id")
    both = Call("and", (Call("matched", (Lit(left),)), Call("matched", (Lit(right),))))
    side = Call("if", (both, Lit("both"), Call("if", (Call("matched", (Lit(left),)),
                                                      Lit("left_only"), Lit("right_only")))))
    plan = Plan((left, right), (Join(right, "full"),), None,
                (PlanGroup("side", side, SIDE_DOMAIN),), (COUNT,))
    return _template(plan, "overlap", dp=_dp(params, required=False),
                     min_group_size=_min_size(params), max_groups=len(SIDE_DOMAIN))


def incrementality(params: Mapping[str, object]) -> TemplateBundle:
    """Conversion of exposed vs non-exposed matched users, absolute and relative lift, with DP.

    Params: ``exposure`` (publisher dataset), ``exposure_id`` (default "id"), ``exposed`` (0/1 or
    boolean column, default "exposed"; a user exposed in any row is exposed); ``conversions``
    (brand dataset), ``conversion_id`` (default "id"), ``converted`` (0/1 or boolean, default
    "converted"); optional ``spend`` column with ``spend_upper`` (and ``spend_lower``, default
    "0"); ``epsilon`` (required); ``min_group_size``. Matched users = inner join on the id. Group
    key ``exposed`` with public domain ["0", "1"].
    """
    _check_keys(
        params,
        {
            "exposure",
            "exposure_id",
            "exposed",
            "conversions",
            "conversion_id",
            "converted",
            "spend",
            "spend_lower",
            "spend_upper",
            "epsilon",
            "min_group_size",
        },
    )
    exposure, conversions = _name(params, "exposure"), _name(params, "conversions")
    if exposure == conversions:
        raise InputError("incrementality needs two different datasets")
    _name(params, "exposure_id", "id"), _name(params, "conversion_id", "id")
    exposed, converted = (
        _name(params, "exposed", "exposed"),
        _name(params, "converted", "converted"),
    )
    measures = [COUNT, PlanMeasure("conversion_rate", "mean",
                                   _positive(Col(conversions, converted)), "0", "1")]
    if params.get("spend") is not None:
        spend = _name(params, "spend")
        upper = check_decimal(params.get("spend_upper"), "params.spend_upper")
        lower = check_decimal(params.get("spend_lower", "0"), "params.spend_lower")
        if Decimal(lower) > Decimal(upper):
            raise InputError("params: spend_lower above spend_upper")
        measures.append(PlanMeasure("spend_per_user", "mean",
                                    Call("to_decimal", (Col(conversions, spend),)), lower, upper))
    group = PlanGroup("exposed", Call("to_text", (_positive(Col(exposure, exposed)),)),
                      EXPOSED_DOMAIN)
    plan = Plan((exposure, conversions), (Join(conversions, "inner"),), None, (group,),
                tuple(measures))
    return _template(plan, "incrementality", dp=_dp(params, required=True),
                     min_group_size=_min_size(params), max_groups=len(EXPOSED_DOMAIN))


def enrichment(params: Mapping[str, object]) -> TemplateBundle:
    """Mean partner score per segment over the recipient's own accounts.

    Params: ``accounts`` (the recipient's dataset), ``accounts_id`` (default "id"),
    ``attributes`` (partner dataset), ``attributes_id`` (default "id"), ``segment`` (default
    "segment"), ``score`` (column), ``score_lower``, ``score_upper`` (decimal strings), optional
    ``segments`` (public list of segment names; without it, DP needs ``delta`` for thresholding),
    ``epsilon``, ``delta``, ``min_group_size``. An account with several partner rows keeps the
    first by (segment, score). The bundle's recipient should be the owner of ``accounts``.
    """
    _check_keys(
        params,
        {
            "accounts",
            "accounts_id",
            "attributes",
            "attributes_id",
            "segment",
            "score",
            "score_lower",
            "score_upper",
            "segments",
            "epsilon",
            "delta",
            "min_group_size",
        },
    )
    accounts, attributes = _name(params, "accounts"), _name(params, "attributes")
    if accounts == attributes:
        raise InputError("enrichment needs two different datasets")
    _name(params, "accounts_id", "id"), _name(params, "attributes_id", "id")
    segment, score = _name(params, "segment", "segment"), _name(params, "score")
    lower = check_decimal(params.get("score_lower"), "params.score_lower")
    upper = check_decimal(params.get("score_upper"), "params.score_upper")
    if Decimal(lower) > Decimal(upper):
        raise InputError("params: score_lower above score_upper")
    segments = params.get("segments")
    domain: tuple[str, ...] | None = None
    if segments is not None:
        if not isinstance(segments, list | tuple) or not all(isinstance(s, str) for s in segments):
            raise InputError("params.segments: expected a list of strings")
        if not segments or len(set(segments)) != len(segments):
            raise InputError("params.segments: expected distinct names")
        domain = tuple(segments)
    plan = Plan((accounts, attributes), (Join(attributes, "inner"),), None,
                (PlanGroup("segment", Call("to_text", (Col(attributes, segment),)), domain),),
                (COUNT, PlanMeasure("mean_score", "mean",
                                    Call("to_decimal", (Col(attributes, score),)), lower, upper)))
    return _template(plan, "enrichment", dp=_dp(params, required=False),
                     min_group_size=_min_size(params))


TEMPLATES: dict[str, Callable[[Mapping[str, object]], TemplateBundle]] = {
    "overlap": overlap,
    "incrementality": incrementality,
    "enrichment": enrichment,
}


def build(name: str, params: Mapping[str, object]) -> TemplateBundle:
    """Instantiate template ``name``; ``InputError`` for an unknown name or bad parameters."""
    if name not in TEMPLATES:
        raise InputError(f"unknown template {name!r}")
    return TEMPLATES[name](params)


build_template = build


__all__ = [
    "DATASET_PARAMS",
    "TEMPLATES",
    "TemplateBundle",
    "build",
    "build_template",
    "enrichment",
    "incrementality",
    "overlap",
]
