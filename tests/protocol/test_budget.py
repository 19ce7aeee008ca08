"""Cost and budget arithmetic (T42/T44/T45 accounting: every run is charged)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from sdk.errors import PrivacyError
from sdk.protocol.budget import check_budget, estimate, remaining_after, run_cost, total_spent
from tests.privacy._util import spec

D = Decimal


def test_run_cost() -> None:
    assert run_cost(spec()) == (D(0), D(0))
    assert run_cost(spec(dp={"epsilon": "0.25", "delta": "0.000001"})) == (D("0.25"), D("1E-6"))


def test_estimate_per_dataset() -> None:
    s = spec(dp={"epsilon": "0.4"})
    lines = estimate(s, {"crm": D("1"), "pub": D("0.5")}, {"crm": D("0.5"), "pub": D("0.2")})
    assert lines["crm"] == {
        "cost": D("0.4"),
        "delta": D(0),
        "budget": D(1),
        "spent": D("0.5"),
        "left": D("0.1"),
        "ok": True,
    }
    assert lines["pub"]["left"] == D("-0.1") and lines["pub"]["ok"] is False
    with pytest.raises(PrivacyError) as err:
        check_budget(s, {"crm": D("1"), "pub": D("0.5")}, {"crm": D("0.5"), "pub": D("0.2")})
    assert "pub" in str(err.value) and "crm" not in str(err.value)


def test_exact_decimal_arithmetic_with_36_digits() -> None:
    eps = "0.000000000000000001"
    s = spec(dp={"epsilon": eps})
    budget = {"d": D("999999999999999999.999999999999999999")}
    left = estimate(s, budget, {})["d"]["left"]
    assert left == D("999999999999999999.999999999999999998")


def test_every_run_is_charged_differencing_pair_and_repeats() -> None:
    # T42: count(*) and count(*) minus one user are two runs, both charged;
    # T44: the same query a thousand times charges a thousand times.
    q1 = spec(dp={"epsilon": "0.3"})
    q2 = spec(dp={"epsilon": "0.3"}, group_by=[{"column": "g", "domain": ["x"]}])
    charges = [("crm", run_cost(q1)[0]), ("crm", run_cost(q2)[0])]
    spent = total_spent(charges)
    assert spent == {"crm": D("0.6")}
    assert remaining_after({"crm": D("1")}, spent) == {"crm": D("0.4")}
    assert estimate(q1, {"crm": D("1")}, spent)["crm"]["ok"] is True
    assert estimate(q1, {"crm": D("1")}, total_spent([*charges, *charges]))["crm"]["ok"] is False
    many = total_spent(("crm", D("0.001")) for _ in range(1000))
    assert many["crm"] == D("1.000")
    with pytest.raises(PrivacyError):
        check_budget(q1, {"crm": D("1")}, many)


def test_non_dp_runs_cost_nothing_and_charges_cannot_be_negative() -> None:
    assert estimate(spec(), {"crm": D(0)}, {"crm": D(0)})["crm"]["ok"] is True
    with pytest.raises(PrivacyError):
        total_spent([("crm", D("-1"))])
