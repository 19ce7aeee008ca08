"""Canary values planted in the input never appear in a released table or an error; list mode."""

from __future__ import annotations

import pyarrow as pa
import pytest

from enclave.privacy.aggregate import apply_output_spec
from sdk.errors import PrivacyError, SealroomError
from sdk.protocol.spec import OutputSpec
from tests.privacy._util import hexid, spec

CANARY_ID = "c0ffee" * 10 + "c0de"  # 64 hex chars
CANARY_SEG = "CANARY-SEGMENT-7d1f"
CANARY_NUM = 987654.321


def _planted() -> pa.Table:
    uid = [hexid(i) for i in range(300)] + [CANARY_ID] + [hexid(10_000 + i) for i in range(3)]
    seg = ["a"] * 150 + ["b"] * 150 + [CANARY_SEG] * 4
    spend = [10.0] * 300 + [CANARY_NUM] * 4
    return pa.table({"uid": uid, "seg": seg, "spend": spend, "note": [CANARY_SEG] * 304})


def _text(table: pa.Table) -> str:
    return repr(table.to_pylist()) + repr(table.schema)


def _assert_clean(text: str) -> None:
    for canary in (CANARY_ID, CANARY_SEG, str(CANARY_NUM), "987654"):
        assert canary not in text


MEASURE = [{"name": "spend", "column": "spend", "agg": "sum", "lower": "0", "upper": "100"}]


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"dp": {"epsilon": "1", "delta": "0.000001"}},
        {"dp": {"epsilon": "1"}, "group_by": [{"column": "seg", "domain": ["a", "b"]}]},
    ],
)
def test_canaries_never_released(extra: dict[str, object]) -> None:
    fields: dict[str, object] = {"group_by": [{"column": "seg"}], "measures": MEASURE}
    fields.update(extra)
    out = apply_output_spec(_planted(), spec(**fields))
    _assert_clean(_text(out.table) + repr(out.accuracy) + out.mechanism)
    assert set(out.table.column("seg").to_pylist()) <= {"a", "b"}


def test_canaries_never_in_errors() -> None:
    table = _planted()
    bad_specs = [
        spec(group_by=[{"column": "missing"}]),
        spec(measures=[{"name": "m", "column": "note", "agg": "sum", "lower": "0", "upper": "1"}]),
        spec(group_by=[{"column": "seg"}], dp={"epsilon": "1"}),
        OutputSpec.from_dict(
            {"mode": "list", "privacy_unit": "uid", "list_column": "uid", "list_min_size": 5}
        ),
    ]
    for s in bad_specs:
        with pytest.raises(SealroomError) as err:
            apply_output_spec(table, s, min_group_size=1, recipient_ids=pa.array([CANARY_ID]))
        _assert_clean(str(err.value) + err.value.diagnostics() + repr(err.value.args))


# --- list mode ----------------------------------------------------------------------------------


def _list_spec(**extra: object) -> OutputSpec:
    return OutputSpec.from_dict(
        {"mode": "list", "privacy_unit": "uid", "list_column": "uid", **extra}
    )


def test_list_mode_releases_only_the_recipients_own_ids() -> None:
    mine = pa.array([hexid(i) for i in range(0, 200)] + [hexid(999_999)])
    out = apply_output_spec(_planted(), _list_spec(), min_group_size=50, recipient_ids=mine)
    released = out.table.column("uid").to_pylist()
    assert released == sorted(hexid(i) for i in range(200))
    assert CANARY_ID not in released and hexid(999_999) not in released
    assert out.epsilon_charged == 0


def test_list_mode_minimum_size() -> None:
    mine = pa.chunked_array([[hexid(i) for i in range(49)]])
    with pytest.raises(PrivacyError):
        apply_output_spec(_planted(), _list_spec(), min_group_size=50, recipient_ids=mine)
    with pytest.raises(PrivacyError):  # the spec's own minimum, when stricter, applies too
        apply_output_spec(
            _planted(), _list_spec(list_min_size=100), min_group_size=10, recipient_ids=mine
        )
    out = apply_output_spec(_planted(), _list_spec(), min_group_size=49, recipient_ids=mine)
    assert out.table.num_rows == 49


def test_list_mode_refusals() -> None:
    with pytest.raises(PrivacyError):
        apply_output_spec(_planted(), _list_spec(), recipient_ids=None)
    with pytest.raises(PrivacyError):
        apply_output_spec(
            _planted(), _list_spec(dp={"epsilon": "1"}), recipient_ids=pa.array([hexid(1)])
        )
