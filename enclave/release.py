"""The bridge from the runner's row-level table to what may be released (DESIGN §6).

The privacy layer (``enclave.privacy``) does the enforcement; this module feeds it what the
verified job state says (output spec, strictest minimum group size, the recipient's own
identifiers for list mode) and turns its result into rows for the recipients.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from enclave.state import TrustedJobState
from sdk.errors import InputError, PrivacyError
from sdk.protocol.models import Bundle


@dataclass(frozen=True)
class Released:
    """What leaves the worker (sealed): columns, rows and metadata for the recipients."""

    columns: list[str]
    rows: list[list[Any]]
    suppressed_groups: int
    meta: dict[str, Any] = field(default_factory=dict)


def check_template_bundle(bundle: Bundle) -> None:
    """A template bundle's signed code and output spec must be exactly what the template
    generates from its signed parameters, so reviewers can trust the template's name.

    Raises:
        InputError: unknown template, invalid parameters, or code/spec that differ.
    """
    from sdk.protocol.templates import build

    assert bundle.template is not None
    generated = build(bundle.template, bundle.params)
    if generated.code != bundle.code or generated.output != bundle.output:
        raise InputError("bundle: code or output spec differ from what the template generates")


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
    """Apply the bundle's output spec to the runner's table with the platform's rules.

    Raises:
        PrivacyError: the output spec cannot be satisfied (too small a list, missing columns).
        ResourceError: too many groups.
    """
    from enclave.privacy import apply_output_spec

    spec = state.bundle.output
    recipient_ids = _recipient_ids(state, tables) if spec.mode == "list" else None
    result = apply_output_spec(
        table, spec, min_group_size=state.min_group_size(), recipient_ids=recipient_ids
    )
    released: pa.Table = result.table
    meta: dict[str, Any] = {
        "mode": spec.mode,
        "min_group_size": state.min_group_size(),
        "suppressed_groups": result.suppressed_groups,
        "epsilon": str(result.epsilon_charged),
        "delta": str(result.delta_charged),
        "accuracy": {k: str(v) for k, v in result.accuracy.items()},
        "mechanism": str(result.mechanism),
    }
    if state.bundle.template is not None:
        from enclave.privacy import postprocess
        from sdk.protocol.templates import build

        generated = build(state.bundle.template, state.bundle.params)
        meta["template"] = state.bundle.template
        meta["cells"] = {
            "columns": list(released.column_names),
            "rows": [list(r.values()) for r in released.to_pylist()],
        }
        released = postprocess(generated.post, released, result)
    return Released(
        columns=list(released.column_names),
        rows=[list(r.values()) for r in released.to_pylist()],
        suppressed_groups=result.suppressed_groups,
        meta=meta,
    )
