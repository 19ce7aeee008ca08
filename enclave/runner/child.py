"""The runner child: ``python -I -B -m enclave.runner '<limits json>'``.

Runs in a fresh interpreter spawned by :mod:`enclave.runner.client`, holding no keys. In order:
apply rlimits (CPU, address space, open files, file size 0, no core dumps); move stdout to a
private descriptor and point fd 1 at ``/dev/null`` (nothing the query or an engine prints can
corrupt the result stream); block pandas from being imported; read the request; compile or check
the query before reading any table; read and decode the tables; run; write one status frame and,
on success, the Arrow IPC stream; ``os._exit`` without tearing down the heap.

Nothing derived from data is ever written anywhere but the result stream: errors carry codes
and static or code-derived messages only, and stderr receives nothing from this module.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
from collections.abc import Iterable, Mapping, Sequence
from importlib.machinery import ModuleSpec
from typing import TYPE_CHECKING, Any, Final, NoReturn

from enclave.runner.errors import (
    E_INPUT,
    E_INTERNAL,
    E_QUERY_RUNTIME,
    E_RESOURCE,
    RunnerError,
)
from enclave.runner.limits import TABLE_NAME, RunnerLimits
from enclave.runner.protocol import (
    MAX_REQUEST_BYTES,
    ProtocolError,
    encode_frame,
    read_exact_into,
    read_frame,
    write_all,
)

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

MAX_OPEN_FILES: Final = 64
MATCH_MARK: Final = "__match"  # sdk.protocol.plan.MATCH_MARK (tests check they agree)
_BLOCKED_MODULES: Final = ("pandas",)
_OOM_FRAME: Final = encode_frame(
    {"v": 1, "ok": False, "code": E_RESOURCE, "message": "memory limit exceeded"}
)


class _BlockImports:
    """A meta-path finder that makes blocked packages look absent."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if name.split(".", 1)[0] in _BLOCKED_MODULES:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def _set_limit(which: int, value: int) -> None:
    _soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value if which != resource.RLIMIT_CPU else hard))


def apply_rlimits(limits: RunnerLimits) -> None:
    """Lower this process's rlimits (they can only go down, never up)."""
    cpu = max(1, math.ceil(limits.cpu_seconds))
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    cpu_hard = cpu + 1 if hard == resource.RLIM_INFINITY else min(cpu + 1, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (min(cpu, cpu_hard), cpu_hard))
    _set_limit(resource.RLIMIT_AS, limits.memory_bytes)
    _set_limit(resource.RLIMIT_NOFILE, MAX_OPEN_FILES)
    _set_limit(resource.RLIMIT_FSIZE, limits.spill_bytes)
    _set_limit(resource.RLIMIT_CORE, 0)


def _isolate_stdout() -> int:
    """Return a private copy of fd 1 and send fd 1 itself to /dev/null."""
    result_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    return result_fd


def _read_tables(metas: Sequence[dict[str, Any]], limits: RunnerLimits) -> dict[str, pa.Table]:
    import pyarrow as pa

    from enclave.runner.inputs import decode_parquet

    pa.set_cpu_count(limits.threads)
    pa.set_io_thread_count(1)
    tables: dict[str, pa.Table] = {}
    for meta in metas:
        buf = pa.allocate_buffer(meta["bytes"])
        if read_exact_into(0, memoryview(buf)) != meta["bytes"]:
            raise ProtocolError("input ended early")
        tables[meta["name"]] = decode_parquet(meta["name"], buf, limits)
        del buf
    os.close(0)
    return tables


def _encode(schema: pa.Schema, batches: Iterable[pa.RecordBatch],
            limits: RunnerLimits) -> tuple[pa.Buffer, int]:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    rows = 0
    with pa.ipc.new_stream(sink, schema.remove_metadata()) as writer:
        for batch in batches:
            rows += batch.num_rows
            if rows > limits.max_output_rows:
                raise RunnerError(E_RESOURCE, f"output exceeds {limits.max_output_rows} rows")
            writer.write_batch(batch)
            if sink.tell() > limits.max_output_bytes:
                raise RunnerError(E_RESOURCE, f"output exceeds {limits.max_output_bytes} bytes")
    body = sink.getvalue()
    if body.size > limits.max_output_bytes:
        raise RunnerError(E_RESOURCE, f"output exceeds {limits.max_output_bytes} bytes")
    return body, rows


def _run_python(source: str, params: Any, metas: Sequence[dict[str, Any]],
                limits: RunnerLimits) -> tuple[pa.Buffer, int]:
    from enclave.runner.policy import compile_query

    code = compile_query(source)  # before any table is read
    tables = _read_tables(metas, limits)

    from enclave.runner.facade import unwrap_table, wrap_tables
    from enclave.runner.pysandbox import run, runtime_error

    try:
        result = run(code, wrap_tables(tables), params)
    except RunnerError:
        raise
    except MemoryError:
        raise RunnerError(E_RESOURCE, "memory limit exceeded") from None
    except Exception as exc:
        raise runtime_error(exc) from None
    del tables
    try:
        table = unwrap_table(result)
    except TypeError:
        raise RunnerError(
            E_QUERY_RUNTIME, f"query returned {type(result).__name__}, expected a Table"
        ) from None
    if table.num_rows > limits.max_output_rows:
        raise RunnerError(E_RESOURCE, f"output exceeds {limits.max_output_rows} rows")
    if table.nbytes > limits.max_output_bytes:
        raise RunnerError(E_RESOURCE, f"output exceeds {limits.max_output_bytes} bytes")
    return _encode(table.schema, table.to_batches(), limits)


def _run_sql(sql: str, params: Any, metas: Sequence[dict[str, Any]],
             limits: RunnerLimits) -> tuple[pa.Buffer, int]:
    import duckdb

    from enclave.runner.sqlengine import (
        bind_sql,
        check_sql,
        execute,
        execution_error,
        open_connection,
    )

    con = open_connection({}, limits)
    check_sql(con, sql)  # before any table is read
    for name, table in _read_tables(metas, limits).items():
        try:
            con.register(name, table)
        except (MemoryError, duckdb.OutOfMemoryException):
            raise RunnerError(E_RESOURCE, "memory limit exceeded") from None
    relation = bind_sql(con, sql, params if isinstance(params, dict) else {})
    try:
        reader = execute(relation)
        return _encode(reader.schema, reader, limits)
    except RunnerError:
        raise
    except Exception as exc:
        raise execution_error(exc) from None


def _received_fds(fd_socket: int | None, count: int) -> list[int]:
    """The input descriptors the supervisor sent over the inherited socket."""
    import socket

    if fd_socket is None:
        raise ProtocolError("no descriptor socket")
    sock = socket.socket(fileno=fd_socket)
    try:
        _msg, fds, _flags, _addr = socket.recv_fds(sock, 16, max(1, count))
    finally:
        sock.close()
    if len(fds) != count:
        raise ProtocolError("input descriptors missing")
    return fds


def _run_plan(sql: str, metas: Sequence[dict[str, Any]], limits: RunnerLimits,
              fd_socket: int | None, check: str | None = None,
              joins_only: bool = False) -> tuple[bytes, int]:
    """A compiled plan (platform SQL, never party code) over the inherited input files: DuckDB
    reads each Parquet file in place (``/proc/self/fd/N``); those paths are the only ones it
    may read, and its configuration is locked before the query runs. The result (group keys,
    counts and exact integer sums, or a list of ids) comes back as JSON: this process never
    loads Arrow.

    ``check`` (platform SQL too, :func:`sdk.protocol.plan.one_row_check_sql` or
    :func:`~sdk.protocol.plan.first_pass_sql`) runs first: one row of counts, one per dataset,
    each of which must be 0, else ``E_INPUT`` naming those datasets and the plan does not run
    (so nothing of the plan's work depends on a false statement). Its columns named
    ``__match…`` (the match rate's counts) come back as one more row of the result, marked
    ``__match``, as the plan's own match row would. The check has its own connection, with
    DuckDB's default share of the memory; ``joins_only`` (the plan groups by no person:
    ``CompiledPlan.groups_persons`` false) gives the plan's connection the larger share."""
    from enclave.runner.sqlengine import execution_error

    fds = _received_fds(fd_socket, len(metas))
    os.close(0)
    paths: dict[str, str] = {}
    for meta in metas:
        if not TABLE_NAME.fullmatch(str(meta.get("name", ""))):
            raise ProtocolError("bad table name")
        index = meta.get("fd")
        if type(index) is not int or not 0 <= index < len(fds):
            raise ProtocolError("bad input descriptor")
        paths[meta["name"]] = f"/proc/self/fd/{fds[index]}"
    extra: dict[str, Any] = {}
    if check is not None:
        checking = _plan_connection(paths, limits, joins_only=False)
        try:
            extra = _check_one_row(checking, check)
        finally:
            checking.close()
    con = _plan_connection(paths, limits, joins_only=joins_only)
    try:
        cursor = con.execute(sql)
        columns = [d[0] for d in cursor.description or []]
        rows = cursor.fetchmany(limits.max_output_rows + 1)
    except RunnerError:
        raise
    except Exception as exc:
        raise execution_error(exc) from None
    if extra:  # the match row, as UNION ALL BY NAME would append it
        width = len(columns)
        columns = [*columns, MATCH_MARK, *extra]
        rows = [(*r, *([None] * (len(extra) + 1))) for r in rows]
        rows.append((*([None] * width), True, *extra.values()))
    if len(rows) > limits.max_output_rows:
        raise RunnerError(E_RESOURCE, f"output exceeds {limits.max_output_rows} rows")
    body = json.dumps({"columns": columns, "rows": rows}, separators=(",", ":"),
                      allow_nan=False).encode("utf-8")
    if len(body) > limits.max_output_bytes:
        raise RunnerError(E_RESOURCE, f"output exceeds {limits.max_output_bytes} bytes")
    return body, len(rows)


def _plan_connection(paths: Mapping[str, str], limits: RunnerLimits, *,
                     joins_only: bool) -> Any:
    """A locked DuckDB connection that may read only ``paths`` (table name → inherited
    descriptor path), each as a view named as its table; ``joins_only`` sizes its buffers
    (:func:`enclave.runner.sqlengine.buffer_bytes`). Raises ``RunnerError(E_RESOURCE)`` when it
    cannot allocate."""
    import duckdb

    from enclave.runner.sqlengine import open_connection

    con = open_connection({}, limits, readable=list(paths.values()), joins_only=joins_only)
    try:
        for name, path in paths.items():
            # names are checked identifiers (client.TABLE_NAME), paths built here from an int
            con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM read_parquet(\'{path}\')')  # noqa: S608
    except (MemoryError, duckdb.OutOfMemoryException):
        con.close()
        raise RunnerError(E_RESOURCE, "memory limit exceeded") from None
    return con


def _check_one_row(con: Any, check: str) -> dict[str, Any]:
    """Run the one-row check; raise ``E_INPUT`` naming its non-zero datasets; return its
    ``__match…`` columns."""
    from enclave.runner.sqlengine import execution_error

    try:
        cursor = con.execute(check)
        names = [d[0] for d in cursor.description or []]
        row = cursor.fetchone()
    except Exception as exc:
        raise execution_error(exc) from None
    if row is None or len(row) != len(names):
        raise RunnerError(E_INTERNAL, "the one-row check gave no row")
    values = dict(zip(names, row, strict=True))
    bad = [n for n, v in values.items() if not n.startswith(MATCH_MARK) and v != 0]
    if bad:
        raise RunnerError(E_INPUT, f"{', '.join(repr(n) for n in bad)}: an identifier is "
                          "repeated or empty although the owner signed one row per person")
    return {n: v for n, v in values.items() if n.startswith(MATCH_MARK)}


def _check_request(request: dict[str, Any]) -> None:
    if request.get("kind") not in ("python", "sql", "plan") \
            or type(request.get("code")) is not str:
        raise ProtocolError("bad request")
    metas = request.get("tables")
    if type(metas) is not list or not all(
        type(m) is dict and type(m.get("name")) is str and type(m.get("bytes")) is int
        and m["bytes"] >= 0 for m in metas
    ):
        raise ProtocolError("bad table list")


def serve(limits: RunnerLimits, fd_socket: int | None = None
          ) -> tuple[pa.Buffer | bytes, int]:
    """Read the request from fd 0 and run it; return the Arrow IPC body and its row count."""
    request = read_frame(0, MAX_REQUEST_BYTES)
    _check_request(request)
    if request["kind"] != "plan" and limits.spill_bytes:
        # only platform SQL may spill: custom code can write no file at all
        import dataclasses

        limits = dataclasses.replace(limits, spill_bytes=0)
        _set_limit(resource.RLIMIT_FSIZE, 0)
    caps = request.get("caps") or {}
    if type(caps) is not dict \
            or not set(caps) <= {"max_output_rows", "max_output_bytes", "memory_bytes"} \
            or not all(type(v) is int and v > 0 for v in caps.values()):
        raise ProtocolError("bad output caps")
    if caps.get("memory_bytes", 0) > limits.memory_bytes:
        raise ProtocolError("a memory limit only goes down")
    if caps:
        import dataclasses

        limits = dataclasses.replace(limits, **caps)
        if "memory_bytes" in caps:  # a runner started before its job: sized now
            _set_limit(resource.RLIMIT_AS, limits.memory_bytes)
    if request["kind"] == "python":
        return _run_python(request["code"], request.get("params"), request["tables"], limits)
    if request["kind"] == "plan":
        check = request.get("check")
        joins_only = request.get("joins_only", False)
        if (check is not None and type(check) is not str) or type(joins_only) is not bool:
            raise ProtocolError("bad check")
        return _run_plan(request["code"], request["tables"], limits, fd_socket, check,
                         joins_only)
    return _run_sql(request["code"], request.get("params"), request["tables"], limits)


def _prewarm() -> None:
    """Load the engines before the request arrives (the supervisor is still verifying)."""
    import duckdb  # noqa: F401
    import pyarrow
    import pyarrow.ipc
    import pyarrow.parquet  # noqa: F401


def main(argv: Sequence[str]) -> NoReturn:
    """Entry point of ``python -m enclave.runner``; never returns."""
    try:
        limits = RunnerLimits.from_json(json.loads(argv[1]))
        apply_rlimits(limits)
    except Exception:
        os._exit(70)
    result_fd = _isolate_stdout()
    sys.meta_path.insert(0, _BlockImports)
    fd_socket = int(argv[2]) if len(argv) > 2 and argv[2].isdigit() else None
    status: dict[str, Any]
    body = None
    try:
        if "prewarm" in argv[2:]:
            _prewarm()
        body, rows = serve(limits, fd_socket)
        status = {"v": 1, "ok": True, "rows": rows, "body_bytes": len(memoryview(body)),
                  "format": "json" if isinstance(body, bytes) else "arrow"}
    except RunnerError as exc:
        status = {"v": 1, "ok": False, "code": exc.code, "message": exc.message}
    except MemoryError:
        _write_and_exit(result_fd, _OOM_FRAME, None)
    except BaseException as exc:
        status = {"v": 1, "ok": False, "code": E_INTERNAL,
                  "message": f"runner failed ({type(exc).__name__})"}
    _write_and_exit(result_fd, encode_frame(status), body)


def _write_and_exit(fd: int, frame: bytes, body: pa.Buffer | bytes | None) -> NoReturn:
    try:
        write_all(fd, frame)
        if body is not None:
            write_all(fd, memoryview(body))
        os.close(fd)
    except OSError:
        os._exit(71)
    os._exit(0)
