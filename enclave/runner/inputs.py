"""Decode one input table (Parquet bytes) inside the runner, with caps checked first.

The footer's row count, column count and declared uncompressed size are checked against the
limits before any page is decoded (``E_INPUT``); a footer that lies is caught by RLIMIT_AS while
decoding (``E_RESOURCE``). Messages name the table, never its content.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from enclave.runner.errors import E_INPUT, E_RESOURCE, RunnerError
from enclave.runner.limits import RunnerLimits


def decode_parquet(name: str, buf: pa.Buffer, limits: RunnerLimits) -> pa.Table:
    """Decode ``buf`` into an Arrow table (zero-copy read of the buffer, threads per limits).

    Raises ``RunnerError``: ``E_INPUT`` when the bytes are not Parquet or exceed
    ``max_input_rows``, ``max_input_columns`` or (declared uncompressed size) ``memory_bytes``;
    ``E_RESOURCE`` when decoding runs out of memory. Column names must be unique.
    """
    try:
        parquet = pq.ParquetFile(pa.BufferReader(buf))
        meta = parquet.metadata
        declared = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    except MemoryError:
        raise RunnerError(E_RESOURCE, "memory limit exceeded") from None
    except Exception:
        raise RunnerError(E_INPUT, f"table {name!r} is not valid Parquet") from None
    if meta.num_rows > limits.max_input_rows:
        raise RunnerError(E_INPUT, f"table {name!r} has more than {limits.max_input_rows} rows")
    if meta.num_columns > limits.max_input_columns:
        raise RunnerError(
            E_INPUT, f"table {name!r} has more than {limits.max_input_columns} columns"
        )
    if declared > limits.memory_bytes:
        raise RunnerError(
            E_INPUT, f"table {name!r} declares {declared} uncompressed bytes, more than the "
            f"memory limit"
        )
    try:
        table = parquet.read(use_threads=limits.threads > 1)
    except MemoryError:
        raise RunnerError(E_RESOURCE, "memory limit exceeded") from None
    except Exception:
        raise RunnerError(E_INPUT, f"table {name!r} could not be decoded") from None
    if table.num_rows != meta.num_rows:
        raise RunnerError(E_INPUT, f"table {name!r} does not match its footer")
    if len(set(table.column_names)) != table.num_columns:
        raise RunnerError(E_INPUT, f"table {name!r} has duplicate column names")
    return table.replace_schema_metadata(None)
