"""Templates give the right answers on synthetic data with known ground truth.

Exact runs (no DP) must match to the cent; DP runs must fall within the noise bound derived from
the release's own OpenDP scales at alpha = 1e-9 (so the test is stable), and the reported 95%
intervals must contain the truth for these large-epsilon runs.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from enclave.privacy import dp
from enclave.privacy._post import mean_halfwidth, postprocess
from enclave.privacy.aggregate import COUNT_COLUMN
from sdk.errors import InputError, PrivacyError
from sdk.protocol.spec import OutputSpec
from sdk.protocol.templates import build, build_template
from tests.privacy._util import hexid, run_template

ALPHA = 1e-9


def figures(table: pa.Table) -> dict[str, tuple[float | None, float | None, float | None]]:
    return {r["figure"]: (r["value"], r["ci95_low"], r["ci95_high"]) for r in table.to_pylist()}


# --- overlap ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def overlap_tables() -> dict[str, pa.Table]:
    left = pa.table({"email_sha": [hexid(i) for i in range(0, 3000)] + [None, hexid(5)]})
    right = pa.table({"id": [hexid(i) for i in range(1000, 5000)]})
    return {"crm": left, "publisher": right}


def test_overlap_exact(overlap_tables: dict[str, pa.Table]) -> None:
    bundle = build("overlap", {"left": "crm", "right": "publisher", "left_id": "email_sha"})
    out = run_template(bundle, overlap_tables)
    f = figures(postprocess(bundle.post, out.table, out))
    assert f["overlap"][0] == 2000
    assert f["left_count"][0] == 3000 and f["right_count"][0] == 4000
    assert f["left_match_rate"][0] == pytest.approx(2000 / 3000)
    assert f["right_match_rate"][0] == pytest.approx(0.5)
    assert f["overlap"][1] is None  # no interval without DP


def test_overlap_dp(overlap_tables: dict[str, pa.Table]) -> None:
    bundle = build(
        "overlap",
        {"left": "crm", "right": "publisher", "left_id": "email_sha", "epsilon": "3"},
    )
    out = run_template(bundle, overlap_tables)
    assert out.epsilon_charged == 3
    f = figures(postprocess(bundle.post, out.table, out))
    tol = dp.accuracy(out.noise[COUNT_COLUMN].scale, ALPHA)
    assert abs(f["overlap"][0] - 2000) <= tol
    assert abs(f["left_count"][0] - 3000) <= 2 * tol
    assert abs(f["left_match_rate"][0] - 2000 / 3000) <= 2 * tol / 2900


def test_overlap_small_cell_suppressed() -> None:
    tables = {
        "a": pa.table({"id": [hexid(i) for i in range(0, 100)]}),
        "b": pa.table({"id": [hexid(i) for i in range(10, 300)]}),  # left_only has 10 units
    }
    bundle = build("overlap", {"left": "a", "right": "b"})
    out = run_template(bundle, tables)
    f = figures(postprocess(bundle.post, out.table, out))
    assert f["overlap"][0] == 90
    assert f["left_count"][0] is None and f["left_match_rate"][0] is None
    assert f["right_match_rate"][0] == pytest.approx(90 / 290)


# --- incrementality -----------------------------------------------------------------------------


def _incrementality_tables() -> tuple[dict[str, pa.Table], dict[str, float]]:
    ids = range(0, 30_000)
    exposure = pa.table({"id": [hexid(i) for i in ids], "exposed": [int(i % 3 == 0) for i in ids]})
    conv_ids = range(10_000, 40_000)

    def converted(i: int) -> int:
        return int(i % 10 < (3 if i % 3 == 0 else 2))

    conversions = pa.table(
        {
            "id": [hexid(i) for i in conv_ids],
            "converted": [bool(converted(i)) for i in conv_ids],
            "spend": [float(i % 50) if converted(i) else 0.0 for i in conv_ids],
        }
    )
    matched = range(10_000, 30_000)
    exp = [i for i in matched if i % 3 == 0]
    ctl = [i for i in matched if i % 3 != 0]
    truth = {
        "exposed_users": len(exp),
        "control_users": len(ctl),
        "exposed_conversion_rate": sum(converted(i) for i in exp) / len(exp),
        "control_conversion_rate": sum(converted(i) for i in ctl) / len(ctl),
        "exposed_spend_per_user": sum(i % 50 if converted(i) else 0 for i in exp) / len(exp),
    }
    truth["absolute_lift"] = truth["exposed_conversion_rate"] - truth["control_conversion_rate"]
    truth["relative_lift"] = truth["absolute_lift"] / truth["control_conversion_rate"]
    return {"pub": exposure, "brand": conversions}, truth


PARAMS = {"exposure": "pub", "conversions": "brand", "spend": "spend", "spend_upper": "100"}


def test_incrementality_exact_when_noise_is_negligible() -> None:
    tables, truth = _incrementality_tables()
    bundle = build("incrementality", {**PARAMS, "epsilon": "1000000"})
    out = run_template(bundle, tables)
    f = figures(postprocess(bundle.post, out.table, out))
    for name, value in truth.items():
        assert f[name][0] == pytest.approx(value, abs=1e-4), name


def test_incrementality_dp_within_reported_accuracy() -> None:
    tables, truth = _incrementality_tables()
    bundle = build("incrementality", {**PARAMS, "epsilon": "5"})
    out = run_template(bundle, tables)
    assert set(out.accuracy) == {COUNT_COLUMN, "conversion_rate", "spend_per_user"}
    rows = {r["exposed"]: r for r in out.table.to_pylist()}
    for arm, rate_name in (("1", "exposed_conversion_rate"), ("0", "control_conversion_rate")):
        n = rows[arm][COUNT_COLUMN]
        tol = mean_halfwidth(out, "conversion_rate", n, ALPHA)
        assert tol is not None and abs(rows[arm]["conversion_rate"] - truth[rate_name]) <= tol
    f = figures(postprocess(bundle.post, out.table, out))
    b1 = mean_halfwidth(out, "conversion_rate", rows["1"][COUNT_COLUMN], ALPHA)
    b0 = mean_halfwidth(out, "conversion_rate", rows["0"][COUNT_COLUMN], ALPHA)
    assert b1 is not None and b0 is not None
    assert abs(f["absolute_lift"][0] - truth["absolute_lift"]) <= b1 + b0
    value, low, high = f["relative_lift"]
    assert low is not None and high is not None and low <= value <= high


def test_incrementality_requires_epsilon_and_valid_names() -> None:
    with pytest.raises(InputError):
        build("incrementality", {"exposure": "pub", "conversions": "brand"})
    with pytest.raises(InputError):
        build("incrementality", {"exposure": 'pub"; DROP', "conversions": "b", "epsilon": "1"})
    with pytest.raises(InputError):
        build("incrementality", {**PARAMS, "epsilon": "1", "bogus": 1})


# --- enrichment ---------------------------------------------------------------------------------


def _enrichment_tables() -> tuple[dict[str, pa.Table], dict[str, float]]:
    segs = ["gold", "silver", "bronze"]
    accounts = pa.table({"id": [hexid(i) for i in range(0, 5000)]})
    partner = range(2000, 12_000)
    attributes = pa.table(
        {
            "id": [hexid(i) for i in partner],
            "segment": [segs[i % 3] for i in partner],
            "score": [(i % 100) / 100 for i in partner],
        }
    )
    truth: dict[str, float] = {}
    for k, seg in enumerate(segs):
        members = [i for i in range(2000, 5000) if i % 3 == k]
        truth[seg] = sum((i % 100) / 100 for i in members) / len(members)
    return {"my_accounts": accounts, "partner": attributes}, truth


ENRICH = {
    "accounts": "my_accounts",
    "attributes": "partner",
    "score": "score",
    "score_lower": "0",
    "score_upper": "1",
}


def test_enrichment_exact() -> None:
    tables, truth = _enrichment_tables()
    bundle = build("enrichment", ENRICH)
    out = run_template(bundle, tables)
    table = postprocess(bundle.post, out.table, out)
    got = {r["segment"]: r for r in table.to_pylist()}
    assert set(got) == set(truth)
    for seg, mean in truth.items():
        assert got[seg]["accounts"] == 1000
        assert got[seg]["mean_score"] == pytest.approx(mean, abs=1e-6)


@pytest.mark.parametrize(
    "extra", [{"segments": ["gold", "silver", "bronze", "platinum"]}, {"delta": "0.000001"}]
)
def test_enrichment_dp(extra: dict[str, object]) -> None:
    tables, truth = _enrichment_tables()
    bundle = build("enrichment", {**ENRICH, "epsilon": "4", **extra})
    out = run_template(bundle, tables)
    got = {r["segment"]: r for r in postprocess(bundle.post, out.table, out).to_pylist()}
    assert set(got) == set(truth)  # platinum (empty) is noised, far below 50
    for seg, mean in truth.items():
        tol = mean_halfwidth(out, "mean_score", got[seg]["accounts"], ALPHA)
        assert tol is not None and abs(got[seg]["mean_score"] - mean) <= tol


def test_enrichment_dp_without_segments_or_delta_refused() -> None:
    tables, _ = _enrichment_tables()
    bundle = build("enrichment", {**ENRICH, "epsilon": "1"})
    with pytest.raises(PrivacyError):
        run_template(bundle, tables)


def test_unknown_template_and_post() -> None:
    with pytest.raises(InputError):
        build("nope", {})
    with pytest.raises(InputError):
        postprocess("nope", pa.table({}), None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("overlap", {"left": "a", "right": "b", "epsilon": "1"}),
        ("incrementality", {**PARAMS, "epsilon": "0.5"}),
        ("enrichment", {**ENRICH, "segments": ["x", "y"], "epsilon": "1", "min_group_size": 80}),
        ("enrichment", {**ENRICH, "epsilon": "1", "delta": "0.000001"}),
    ],
)
def test_template_specs_survive_the_signed_round_trip(name: str, params: dict[str, object]) -> None:
    # the worker rebuilds the template from the signed params and compares code and spec
    bundle = build_template(name, params)
    assert OutputSpec.from_dict(bundle.output.to_dict()) == bundle.output
    assert build_template(name, dict(params)) == bundle
