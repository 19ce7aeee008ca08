"""List mode (DESIGN §6): identifiers released to one recipient, only its own ones.

The released list is the set of distinct, non-null values of ``spec.list_column`` that also
appear in the recipient's own upload (``recipient_ids``), compared as strings, sorted (so the row
order of the query output cannot carry information). It is released only when it has at least
``min_size`` entries; otherwise the run is refused with ``PrivacyError`` (the error says only
that the list is too small, never its size or content).
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from sdk.errors import PrivacyError
from sdk.protocol.policy import list_min_size
from sdk.protocol.spec import OutputSpec


def apply_list_mode(
    table: pa.Table,
    spec: OutputSpec,
    *,
    min_size: int,
    recipient_ids: pa.Array | pa.ChunkedArray | None,
) -> pa.Table:
    """Return a one-column table (``spec.list_column``, strings) of the released identifiers.

    ``min_size`` is the strictest minimum group size; ``spec.list_min_size`` applies when larger
    (:func:`sdk.protocol.policy.list_min_size`).
    Raises ``PrivacyError`` when DP is declared (list mode cannot be noised), when the recipient's
    identifiers are missing, when a column is missing, or when the list is too small.
    """
    if spec.dp is not None:
        raise PrivacyError("list mode cannot be released with differential privacy")
    if spec.list_column is None:
        raise PrivacyError("list mode needs list_column")
    if recipient_ids is None:
        raise PrivacyError("list mode needs the recipient's own identifiers")
    column = spec.list_column
    missing = sorted({c for c in (column, spec.privacy_unit) if c not in table.column_names})
    if missing:
        raise PrivacyError(f"query output lacks declared column(s) {missing}")
    floor = list_min_size(min_size, spec)
    ids = (
        recipient_ids.combine_chunks()
        if isinstance(recipient_ids, pa.ChunkedArray)
        else recipient_ids
    )
    con = duckdb.connect(config={"enable_external_access": False})
    try:
        con.register("t", table.select([column]))
        con.register("r", pa.table({"id": ids}))
        rows = con.sql(
            'SELECT DISTINCT CAST(t."' + column.replace('"', '""') + '" AS VARCHAR) AS v FROM t '  # noqa: S608
            "WHERE v IS NOT NULL AND v IN (SELECT CAST(id AS VARCHAR) FROM r) ORDER BY v"
        ).to_arrow_table()
    finally:
        con.close()
    if rows.num_rows < floor:
        raise PrivacyError("list below its minimum size; nothing released")
    return pa.table({column: rows.column("v").cast(pa.string())})
