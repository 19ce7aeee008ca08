"""The bridge from what the query computed to what may be released (DESIGN §6).

The privacy layer (``enclave.privacy``) does the enforcement; this module feeds it what the
verified job state says (output spec, strictest minimum group size, the plan's contribution
bound, the recipient's own identifiers for custom-code list mode) and turns its result into
rows for the recipients. Nothing exact and data-dependent beyond the released cells goes into
the metadata: no count of suppressed groups, no list size below the minimum.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from enclave.privacy.match import release_match, split_match_row
from enclave.state import TrustedJobState
from sdk.errors import PrivacyError
from sdk.protocol.admission import guarantee_of
from sdk.protocol.planoutput import LIST_COLUMN
from sdk.protocol.policy import match_rate_epsilon
from sdk.protocol.records import MatchRecord


@dataclass(frozen=True)
class Released:
    """What leaves the worker: columns, rows and metadata for the recipients (sealed), and
    the measured match rates (in the receipt, for every party)."""

    columns: list[str]
    rows: list[list[Any]]
    meta: dict[str, Any] = field(default_factory=dict)
    match: tuple[MatchRecord, ...] = ()


def _recipient_ids(state: TrustedJobState, tables: Mapping[str, bytes | memoryview]) -> pa.Array:
    bundle = state.bundle
    if len(bundle.recipients) != 1:
        raise PrivacyError("list mode: exactly one recipient")
    recipient = bundle.recipients[0]
    owned = [d for d in bundle.datasets if state.manifest.dataset(d).owner == recipient]
    if not owned:
        raise PrivacyError("list mode: the recipient has no upload among the inputs")
    dataset = state.manifest.dataset(owned[0])
    column = pq.read_table(pa.BufferReader(tables[dataset.name]), columns=[dataset.id_column])
    return column.column(0).combine_chunks()


def apply_privacy(
    state: TrustedJobState, table: pa.Table, tables: Mapping[str, bytes | memoryview]
) -> Released:
    """Apply the bundle's output spec with the platform's rules: to a plan's exact per-group
    aggregates (or its list), or to custom code's row-level table.

    Raises:
        PrivacyError: the output spec cannot be satisfied (custom code: a missing column, too
            small a list; any: a wrong OpenDP feature set).
        ResourceError: declared domains too large (custom code: too many groups).
    """
    from enclave.privacy import PrivacyResult, apply_output_spec, release_groups

    bundle = state.bundle
    spec = bundle.output
    plan = bundle.plan
    meta: dict[str, Any] = {
        "mode": spec.mode,
        "min_group_size": state.min_group_size(),
        "guarantee": guarantee_of(bundle),
    }
    match: tuple[MatchRecord, ...] = ()
    known = state.known_match
    reserved = Decimal(0) if known is not None else match_rate_epsilon(bundle)
    if known is not None:
        match = known  # released before for these uploads: repeated, no new noise
    elif plan is not None:
        table, stats = split_match_row(table, len(plan.inputs))
        if stats is not None:
            match = release_match(stats, bundle, state.manifest,
                                  min_group_size=state.min_group_size(), epsilon=reserved)
    if plan is not None and plan.release == "list":
        listed = _release_list(table, spec.list_min_size, state.min_group_size(), meta)
        return replace(listed, match=match)
    if plan is not None:
        result: PrivacyResult = release_groups(
            table, spec, min_group_size=state.min_group_size(),
            contribution_bound=plan.contribution_bound, reserved_epsilon=reserved)
        count = next((m.name for m in plan.measures if m.agg == "count"), None)
    else:
        recipient_ids = _recipient_ids(state, tables) if spec.mode == "list" else None
        result = apply_output_spec(
            table, spec, min_group_size=state.min_group_size(), recipient_ids=recipient_ids
        )
        count = None
    released: pa.Table = result.table
    meta.update({
        "epsilon": str(result.epsilon_charged),
        "delta": str(result.delta_charged),
        "accuracy": {k: str(v) for k, v in result.accuracy.items()},
        "mechanism": str(result.mechanism),
    })
    if result.truncated:
        meta["truncated"] = True
    if bundle.template is not None:
        from enclave.privacy import postprocess
        from sdk.protocol.templates import build

        generated = build(bundle.template, bundle.params)
        meta["template"] = bundle.template
        meta["cells"] = {
            "columns": list(released.column_names),
            "rows": [list(r.values()) for r in released.to_pylist()],
        }
        released = postprocess(generated.post, released, result)
    elif count is not None and count != "n_units":
        released = released.rename_columns(
            [count if c == "n_units" else c for c in released.column_names])
    return Released(
        columns=list(released.column_names),
        rows=[list(r.values()) for r in released.to_pylist()],
        meta=meta,
        match=match,
    )


def _release_list(ids: pa.Table, spec_min: int | None, min_group_size: int,
                  meta: dict[str, Any]) -> Released:
    """A plan's list: the first input's own identifiers the platform found (sorted, distinct).

    Below the minimum list size the run still succeeds and releases nothing (``withheld``):
    failing would turn the list's size into a run status.
    """
    floor = max(min_group_size, spec_min or 0)
    values = sorted(ids.column("__id").to_pylist()) if ids.num_rows else []
    meta.update({"epsilon": str(Decimal(0)), "delta": str(Decimal(0)), "accuracy": {},
                 "mechanism": f"list: the first input's own identifiers present in the join and "
                              f"passing the predicate; at least {floor} or none"})
    if len(values) < floor:
        meta["withheld"] = "below the minimum list size"
        values = []
    return Released(columns=[LIST_COLUMN], rows=[[v] for v in values], meta=meta)


__all__ = ["Released", "apply_privacy"]
