"""SQL bundles: one SELECT over the job's tables in a locked-down, in-memory DuckDB.

:func:`open_connection` creates the connection with, from the start (connect-time config):
``enable_external_access=false`` (no files, no network, no extension install/load, no
``ATTACH``/``COPY``), ``autoload_known_extensions`` and ``autoinstall_known_extensions`` off,
``allow_community_extensions`` off, ``python_enable_replacements=false`` (a SQL name never
resolves to a Python variable of the runner), no temp directory (no spilling to disk),
``memory_limit`` and ``threads`` from the limits, and ``lock_configuration=true`` so no
statement can change any of it. Only the job's tables are registered, as Arrow views
(zero-copy).

:func:`check_sql` admits exactly one ``SELECT`` statement and refuses calls to functions that
read files or run SQL strings (defence in depth: with external access off they fail anyway).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any, Final

import duckdb
import pyarrow as pa

from enclave.runner.errors import E_QUERY_REJECTED, E_QUERY_RUNTIME, E_RESOURCE, RunnerError
from enclave.runner.limits import RunnerLimits

_DENIED_FUNCTIONS: Final = frozenset({
    "glob", "query", "query_table", "getenv", "checkpoint", "force_checkpoint", "sniff_csv",
    "iceberg_scan", "delta_scan", "sqlite_scan", "sqlite_attach", "postgres_scan",
    "postgres_attach", "mysql_scan", "arrow_scan", "arrow_scan_dumb", "from_csv_auto",
    "load_extension", "install_extension", "json_execute_serialized_sql", "excel_scan",
})
_DENIED_PREFIXES: Final = ("read_", "parquet_", "pragma_", "sniff_", "duckdb_", "iceberg_")
_QUOTABLE: Final = (
    duckdb.ParserException,
    duckdb.CatalogException,
    duckdb.BinderException,
    duckdb.PermissionException,
)
_MEMORY_WORDS: Final = re.compile(r"out of memory|allocat|bad_alloc|memory limit", re.I)
MAX_MESSAGE: Final = 500
BATCH_ROWS: Final = 1 << 17
GIB: Final = 1 << 30
JOIN_HEADROOM: Final = 2 * GIB


def buffer_bytes(memory_bytes: int, *, joins_only: bool = False) -> int:
    """DuckDB's ``memory_limit`` in a runner of ``memory_bytes`` address space: half of it (the
    rest is DuckDB's allocations beside its buffer manager, Python and the engines' code; at
    three quarters a grouping by person over 150M identifiers exceeded the address-space limit,
    ``E_RESOURCE``, instead of spilling). ``joins_only`` (a plan that groups by no person: a join
    and a group-by on its own keys, which spill cleanly) gets up to three quarters, keeping at
    least :data:`JOIN_HEADROOM` beside the buffers: its 100M x 50M join then stops spilling
    (3.4x faster); a small runner keeps half."""
    half = memory_bytes // 2
    if not joins_only:
        return max(64 << 20, half)
    return max(64 << 20, half, min(memory_bytes * 3 // 4, memory_bytes - JOIN_HEADROOM))


def open_connection(tables: Mapping[str, pa.Table], limits: RunnerLimits, *,
                    readable: list[str] | None = None,
                    joins_only: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with external access off, configuration locked, tables registered.

    ``readable`` (plan runs only: platform SQL) lists the only files DuckDB may read, the
    runner's inherited input descriptors; they are allowed before external access is switched
    off and the configuration locked, so no statement can widen them. ``joins_only``: the
    plan groups by no person, so DuckDB may buffer more (:func:`buffer_bytes`).

    Raises ``RunnerError(E_RESOURCE)`` when DuckDB cannot allocate its start-up memory (it
    needs roughly 0.5 GiB of address space: give SQL runs ``memory_bytes`` of 1 GiB or more).
    """
    config: dict[str, str | bool | int | float | list[str]] = {
        "enable_external_access": False,
        "autoload_known_extensions": False,
        "autoinstall_known_extensions": False,
        "allow_community_extensions": False,
        "allow_unsigned_extensions": False,
        "python_enable_replacements": False,
        "temp_directory": os.path.join(os.getcwd(), "spill") if readable and limits.spill_bytes
        else "",
        "threads": limits.threads,
        "memory_limit": f"{buffer_bytes(limits.memory_bytes, joins_only=joins_only)}B",
        "lock_configuration": True,
    }
    if readable and limits.spill_bytes:
        config["max_temp_directory_size"] = f"{limits.spill_bytes}B"
    try:
        if readable:
            late = {k: config.pop(k) for k in ("enable_external_access", "lock_configuration")}
            con = duckdb.connect(":memory:", config=config)
            con.execute("SET allowed_paths = " + "[" + ", ".join(
                "'" + p.replace("'", "''") + "'" for p in readable) + "]")
            con.execute(f"SET enable_external_access = {late['enable_external_access']!s}")
            con.execute("SET lock_configuration = true")
        else:
            con = duckdb.connect(":memory:", config=config)
        for name, table in tables.items():
            con.register(name, table)
    except duckdb.OutOfMemoryException:
        raise RunnerError(E_RESOURCE, "memory limit exceeded") from None
    return con


def _objects(node: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in a ``json_serialize_sql`` tree (iteratively)."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:MAX_MESSAGE] if text else ''}"


def _bind_error(exc: BaseException) -> RunnerError:
    """Errors before execution: out of memory is ``E_RESOURCE``, the rest ``E_QUERY_REJECTED``.

    Parser, catalog, binder and permission messages (about code and schema) are quoted; any
    other kind is named only, in case binding evaluated something over the data.
    """
    if isinstance(exc, duckdb.OutOfMemoryException):
        return RunnerError(E_RESOURCE, "memory limit exceeded")
    if isinstance(exc, _QUOTABLE):
        return RunnerError(E_QUERY_REJECTED, _first_line(exc))
    return RunnerError(E_QUERY_REJECTED, type(exc).__name__)


def check_sql(con: duckdb.DuckDBPyConnection, sql: str) -> frozenset[str]:
    """Admit one SELECT statement without denied functions; else ``E_QUERY_REJECTED``.

    Returns the names of the ``$name`` parameters the statement uses (positional ``?``
    parameters are refused). Messages quote DuckDB's parser, which sees the code only.
    """
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise _bind_error(exc) from None
    if len(statements) != 1:
        raise RunnerError(E_QUERY_REJECTED, f"exactly one SQL statement is allowed, "
                          f"got {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise RunnerError(E_QUERY_REJECTED, f"only SELECT statements are allowed, got "
                          f"{getattr(kind, 'name', 'another kind')}")
    try:
        rows = con.execute("SELECT json_serialize_sql(?::VARCHAR)", [sql]).fetchall()
    except duckdb.Error as exc:
        raise _bind_error(exc) from None
    row = rows[0] if rows else None
    tree = json.loads(row[0]) if row else {"error": True}
    if tree.get("error"):
        raise RunnerError(E_QUERY_REJECTED, "SQL could not be analysed: "
                          f"{str(tree.get('error_message', ''))[:MAX_MESSAGE]}")
    parameters: set[str] = set()
    for node in _objects(tree):
        name = node.get("function_name")
        if isinstance(name, str):
            name = name.lower()
            if name in _DENIED_FUNCTIONS or name.startswith(_DENIED_PREFIXES):
                raise RunnerError(E_QUERY_REJECTED, f"function {name!r} is not allowed in queries")
        if node.get("class") == "PARAMETER":
            ident = str(node.get("identifier", ""))
            if not ident.isidentifier():
                raise RunnerError(E_QUERY_REJECTED, "use named $parameters, not ? or $1")
            parameters.add(ident)
    return frozenset(parameters)


def bind_sql(con: duckdb.DuckDBPyConnection, sql: str,
             params: Mapping[str, Any]) -> duckdb.DuckDBPyRelation:
    """Check and bind ``sql`` with the bundle's ``params`` (as ``$name``); return the relation.

    Raises ``RunnerError(E_QUERY_REJECTED)`` for policy, parse, catalog and binder errors (their
    messages describe the code and the schema, not the data) and for a ``$name`` missing from
    ``params``; ``E_RESOURCE`` when binding runs out of memory.
    """
    used = check_sql(con, sql)
    missing = sorted(used - set(params))
    if missing:
        raise RunnerError(E_QUERY_REJECTED, f"parameter ${missing[0]} is not in the params")
    try:
        relation = con.sql(sql, params={k: params[k] for k in used} or None)
    except duckdb.Error as exc:
        raise _bind_error(exc) from None
    if relation is None:  # pragma: no cover - check_sql admitted a SELECT
        raise RunnerError(E_QUERY_REJECTED, "the statement returns no rows")
    return relation


def execute(relation: duckdb.DuckDBPyRelation) -> pa.RecordBatchReader:
    """Start executing; errors here and while reading batches go to :func:`execution_error`."""
    return relation.to_arrow_reader(BATCH_ROWS)


def execution_error(exc: BaseException) -> RunnerError:
    """Map an error raised while executing: memory → ``E_RESOURCE``; else type name only.

    DuckDB errors that cross the Arrow C stream arrive as ``OSError``/``ArrowException``; their
    text is inspected (never returned) to recognise allocation failures.
    """
    if isinstance(exc, MemoryError | duckdb.OutOfMemoryException):
        return RunnerError(E_RESOURCE, "memory limit exceeded")
    if isinstance(exc, OSError | pa.ArrowException) and _MEMORY_WORDS.search(str(exc)):
        return RunnerError(E_RESOURCE, "memory limit exceeded")
    name = type(exc).__name__
    return RunnerError(E_QUERY_RUNTIME, name if name.isidentifier() else "Exception")
