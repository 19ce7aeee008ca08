"""Supervisor side: spawn a fresh, keyless runner process per query and collect its result.

:func:`run_query` starts ``sys.executable -I -B -m enclave.runner`` (spawned with exec, never
forked from the key holder) with an explicit minimal environment, ``close_fds=True``, a new
session (its own process group), and a fresh empty working directory. The child lowers its own
rlimits before it reads anything. The parent streams the request and the Parquet bytes into
stdin from a thread, reads a capped status frame and result from stdout in another, drains
stderr into a capped buffer that is discarded, and kills the whole process group at the
wall-clock deadline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any, Final, Literal, Protocol

from enclave.runner.errors import (
    CODES,
    E_INTERNAL,
    E_QUERY_REJECTED,
    E_RESOURCE,
    RunnerError,
)
from enclave.runner.limits import TABLE_NAME, RunnerLimits
from enclave.runner.protocol import (
    MAX_PARAMS_BYTES,
    MAX_SOURCE_BYTES,
    MAX_STATUS_BYTES,
    ProtocolError,
    encode_frame,
    read_exact,
    read_exact_into,
    write_all,
)

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

ParquetData = bytes | bytearray | memoryview
"""A table as the supervisor holds it: the Parquet file's bytes, or a view of them."""


class ReadableFile(Protocol):
    """An in-memory input file that can hand a child a read-only descriptor of itself."""

    def reader_fd(self) -> int: ...

STDERR_CAP: Final = 64 * 1024
PIPE_SIZE: Final = 1 << 20
_GRACE_SECONDS: Final = 5.0


def child_env(limits: RunnerLimits) -> dict[str, str]:
    """The child's whole environment: no variable of the parent is inherited."""
    return {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "OMP_NUM_THREADS": str(limits.threads),
        "OPENBLAS_NUM_THREADS": "1",
        "MALLOC_ARENA_MAX": "2",
    }


def _wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """``proc.wait(timeout)``, woken the moment the child exits (a pidfd, where the kernel has
    them) rather than by ``Popen.wait``'s polling, which sleeps up to 50 ms at a time.

    Raises ``subprocess.TimeoutExpired`` after ``timeout`` seconds."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        proc.wait(timeout=timeout)
        return
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
    if not ready:
        raise subprocess.TimeoutExpired(proc.args, timeout)
    proc.wait()


def child_argv(limits: RunnerLimits, fd_socket: int | None = None, *,
               prewarm: bool = False) -> list[str]:
    """The child's command line (isolated mode, no bytecode writes); ``fd_socket`` is the
    inherited socket a plan run's input descriptors arrive on; ``prewarm`` loads the engines
    before the request arrives (for a runner started ahead of its request)."""
    argv = [sys.executable, "-I", "-B", "-m", "enclave.runner", json.dumps(limits.to_json())]
    if fd_socket is not None:
        argv.append(str(fd_socket))
    return [*argv, "prewarm"] if prewarm else argv


def _check_inputs(kind: str, code: str, tables: Mapping[str, ParquetData],
                  params: Mapping[str, object]) -> bytes:
    if kind not in ("python", "sql", "plan"):
        raise ValueError("kind must be 'python', 'sql' or 'plan'")
    if not isinstance(code, str):
        raise TypeError("code must be a str")
    if len(code.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
        raise RunnerError(E_QUERY_REJECTED, f"query code exceeds {MAX_SOURCE_BYTES} bytes")
    for name, data in tables.items():
        if not isinstance(name, str) or not TABLE_NAME.fullmatch(name):
            raise ValueError("table names are identifiers of 1 to 63 ASCII characters")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError("table data must be bytes-like Parquet")
    params_json = json.dumps(dict(params), allow_nan=False).encode("utf-8")
    if len(params_json) > MAX_PARAMS_BYTES:
        raise ValueError(f"params exceed {MAX_PARAMS_BYTES} bytes of JSON")
    return params_json


class _Child:
    """One running child with its feeder, reader and drainer threads."""

    def __init__(self, proc: subprocess.Popen[bytes], limits: RunnerLimits) -> None:
        self.proc = proc
        self.limits = limits
        self.status: dict[str, Any] | None = None
        self.body: bytearray | None = None
        self.failure: str | None = None  # E_RESOURCE reason found by a reader thread
        self.protocol_error = False
        self._stderr = bytearray()

    def kill(self) -> None:
        """SIGKILL the child's process group, unless the child is already reaped.

        An unreaped child (even a zombie) keeps its pid, so the group id cannot be reused.
        """
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def feed(self, header: bytes, tables: list[memoryview]) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            fd = stdin.fileno()
            write_all(fd, header)
            for view in tables:
                write_all(fd, view)
        except OSError:
            pass  # the child stopped reading (rejected early, died or was killed)
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def read_result(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        fd = stdout.fileno()
        try:
            size = int.from_bytes(read_exact(fd, 4), "big")
            if size > MAX_STATUS_BYTES:
                raise ProtocolError("status frame too large")
            status = json.loads(read_exact(fd, size).decode("utf-8"))
            if not isinstance(status, dict) or status.get("v") != 1:
                raise ProtocolError("bad status frame")
            if status.get("ok") is True:
                n = status.get("body_bytes")
                if type(n) is not int or n < 0:
                    raise ProtocolError("bad body size")
                if n > self.limits.max_output_bytes:
                    self.failure = f"output exceeds {self.limits.max_output_bytes} bytes"
                    self.kill()
                    return
                body = bytearray(n)
                if read_exact_into(fd, memoryview(body)) != n:
                    raise ProtocolError("result ended early")
                self.body = body
            self.status = status
            if os.read(fd, 1):  # anything after the result is a protocol violation
                self.protocol_error = True
                self.kill()
        except (ProtocolError, ValueError, UnicodeDecodeError, OSError):
            self.protocol_error = True
            self.kill()  # do not wait for the deadline on a child that misbehaves
        finally:
            with contextlib.suppress(OSError):
                stdout.close()

    def drain_stderr(self) -> None:
        stream: IO[bytes] | None = self.proc.stderr
        assert stream is not None
        try:
            while chunk := os.read(stream.fileno(), 65536):
                room = STDERR_CAP - len(self._stderr)
                if room > 0:
                    self._stderr += chunk[:room]
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                stream.close()


def _set_pipe_size(stream: IO[bytes] | None) -> None:
    if stream is not None and hasattr(fcntl, "F_SETPIPE_SZ"):
        with contextlib.suppress(OSError):
            fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)


def _signal_reason(returncode: int) -> str:
    sig = -returncode
    if sig == signal.SIGXCPU:
        return "CPU time limit exceeded"
    if sig == signal.SIGKILL:
        return "runner was killed (CPU or memory hard limit)"
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = str(sig)
    return f"runner was killed by signal {name}"


class Runner:
    """A fresh, keyless runner process, started ahead of its one request so that its engines
    (DuckDB, Arrow) load while the supervisor verifies and decrypts.

    Use it once: :meth:`run` sends the request and waits for the result (or the deadline,
    counted from the start), :meth:`close` kills an unused runner and removes its working
    directory. A plan run hands the runner its inputs' in-memory files as descriptors over a
    private socket (``SCM_RIGHTS``), so nothing is copied.
    """

    def __init__(self, limits: RunnerLimits | None = None, *, prewarm: bool = False) -> None:
        self.limits = limits or RunnerLimits()
        self.workdir = tempfile.mkdtemp(prefix="sealroom-run-")
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.started = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                child_argv(self.limits, theirs.fileno(), prewarm=prewarm), stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self.workdir,
                env=child_env(self.limits), close_fds=True, start_new_session=True,
                bufsize=0, pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            self._sock.close()
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise
        finally:
            theirs.close()
        self.used = False
        self._memory_cap: int | None = None

    def begin(self, memory_bytes: int) -> None:
        """For a runner started before its job existed: count its wall-clock deadline from now,
        and lower its memory limit to ``memory_bytes`` (sized from the job's inputs; a limit
        only ever goes down). The request carries the lower limit; the child applies it before
        it opens its engine."""
        self.started = time.monotonic()
        if memory_bytes < self.limits.memory_bytes:
            self.limits = dataclasses.replace(self.limits, memory_bytes=max(1, memory_bytes))
            self._memory_cap = self.limits.memory_bytes

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Kill the runner if it is still alive; remove its working directory."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._sock.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def run(
        self,
        kind: Literal["python", "sql", "plan"],
        code: str,
        tables: Mapping[str, ParquetData],
        params: Mapping[str, object],
        *,
        files: Mapping[str, ReadableFile] | None = None,
        max_output_rows: int | None = None,
        max_output_bytes: int | None = None,
        check: str | None = None,
        joins_only: bool = False,
    ) -> pa.Table:
        """Run one query (see :func:`run_query`); output caps may be raised for this run. A
        plan run may carry ``check``, platform SQL run before it whose every value must be 0
        (else ``E_INPUT``; see ``enclave.runner.child._run_plan``), and ``joins_only``: its
        query groups by no person (``CompiledPlan.groups_persons`` false), so DuckDB may
        buffer more."""
        if self.used:
            raise RuntimeError("a runner runs one query")
        self.used = True
        limits = self.limits
        caps: dict[str, int] = {}
        if max_output_rows is not None:
            caps["max_output_rows"] = max_output_rows
        if max_output_bytes is not None:
            caps["max_output_bytes"] = max_output_bytes
        if self._memory_cap is not None:
            caps["memory_bytes"] = self._memory_cap
        if caps:
            limits = dataclasses.replace(limits, **caps)
        params_json = _check_inputs(kind, code, tables, params)
        if (check is not None or joins_only) and kind != "plan":
            raise ValueError("only a plan run carries a check or joins_only")
        if kind == "plan":
            if files is None or set(files) != set(tables):
                raise ValueError("a plan run reads every table from its in-memory file")
            fds = [files[name].reader_fd() for name in tables]
            try:
                socket.send_fds(self._sock, [b"F"], fds)
            except OSError:
                pass  # the runner died early: its status says how
            finally:
                for fd in fds:
                    os.close(fd)
            request: dict[str, Any] = {
                "v": 1, "kind": kind, "code": code, "params": {}, "caps": caps,
                "tables": [{"name": n, "fd": i, "bytes": 0} for i, n in enumerate(tables)],
            }
            if check is not None:
                request["check"] = check
            if joins_only:
                request["joins_only"] = True
            header = encode_frame(request)
            return self._supervise(header, [], limits)
        views = [memoryview(data).cast("B") for data in tables.values()]
        header = encode_frame({
            "v": 1,
            "kind": kind,
            "code": code,
            "params": json.loads(params_json),
            "caps": caps,
            "tables": [{"name": n, "bytes": v.nbytes} for n, v in zip(tables, views,
                                                                      strict=True)],
        })
        return self._supervise(header, views, limits)

    def _supervise(self, header: bytes, views: list[memoryview],
                   limits: RunnerLimits) -> pa.Table:
        proc = self.proc
        child = _Child(proc, limits)
        _set_pipe_size(proc.stdin)
        _set_pipe_size(proc.stdout)
        threads = [
            threading.Thread(target=child.feed, args=(header, views), daemon=True),
            threading.Thread(target=child.read_result, daemon=True),
            threading.Thread(target=child.drain_stderr, daemon=True),
        ]
        for t in threads:
            t.start()
        timed_out = False
        try:
            _wait_exit(proc, max(0.0, limits.wall_seconds - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            timed_out = True
            child.kill()
            proc.wait()
        except BaseException:
            child.kill()
            proc.wait()
            raise
        for t in threads:
            t.join(timeout=_GRACE_SECONDS)
            if t.is_alive():  # a descendant keeps a pipe open
                child.kill()
                t.join(timeout=_GRACE_SECONDS)
        return _outcome(child, timed_out, limits)


def run_query(
    kind: Literal["python", "sql", "plan"],
    code: str,
    tables: Mapping[str, ParquetData],
    params: Mapping[str, object],
    limits: RunnerLimits | None = None,
    *,
    files: Mapping[str, ReadableFile] | None = None,
) -> pa.Table:
    """Run one query bundle over ``tables`` (name → Parquet bytes, or a view of them; never
    copied: the views are streamed to the runner) in a fresh runner process.

    ``kind="plan"`` runs platform-generated SQL (a compiled plan, never party code) over
    ``files``: each input's in-memory file is handed to the runner as a read-only descriptor
    and read in place by DuckDB's own Parquet reader, which may read nothing else.

    Returns the row-level result as a ``pyarrow.Table``. Raises ``RunnerError`` with code
    ``E_QUERY_REJECTED``, ``E_QUERY_RUNTIME``, ``E_RESOURCE``, ``E_INPUT`` or ``E_INTERNAL``
    (see :mod:`enclave.runner.errors`); ``TypeError``/``ValueError`` for misuse by the caller
    (unknown kind, bad table names, params that are not JSON).
    """
    _check_inputs(kind, code, tables, params)
    with Runner(limits) as runner:
        return runner.run(kind, code, tables, params, files=files)


def _json_table(body: bytes | bytearray) -> pa.Table:
    """A plan run's result: {"columns": [...], "rows": [[...], ...]} of text, integers and
    nulls (exact: integers are not rounded through floats)."""
    import pyarrow as pa

    doc = json.loads(body)
    columns, rows = doc["columns"], doc["rows"]
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns) \
            or not isinstance(rows, list) or len(set(columns)) != len(columns):
        raise ValueError("bad result")
    data = {name: [row[i] for row in rows] for i, name in enumerate(columns)}
    return pa.table({name: pa.array(values, type=_json_type(values))
                     for name, values in data.items()})


def _json_type(values: list[Any]) -> pa.DataType:
    import pyarrow as pa

    kinds = {type(v) for v in values if v is not None}
    if kinds <= {int}:
        return pa.int64() if all(v is None or -2**63 <= v < 2**63 for v in values) \
            else pa.decimal128(38, 0)
    if kinds <= {float, int}:
        return pa.float64()
    if kinds <= {str}:
        return pa.string()
    if kinds <= {bool}:
        return pa.bool_()
    raise ValueError("unexpected value type in a plan result")


def _outcome(child: _Child, timed_out: bool, limits: RunnerLimits) -> pa.Table:
    if timed_out:
        raise RunnerError(E_RESOURCE, f"wall-clock deadline of {limits.wall_seconds:g} s "
                          "exceeded")
    if child.failure is not None:
        raise RunnerError(E_RESOURCE, child.failure)
    returncode = child.proc.returncode
    if returncode is not None and returncode < 0:
        raise RunnerError(E_RESOURCE, _signal_reason(returncode))
    status = child.status
    if returncode != 0 or status is None or child.protocol_error:
        raise RunnerError(E_INTERNAL, f"runner ended without a result (exit status "
                          f"{returncode})")
    if status.get("ok") is not True:
        code = status.get("code")
        message = status.get("message")
        if code not in CODES or not isinstance(message, str):
            raise RunnerError(E_INTERNAL, "runner sent a malformed error")
        raise RunnerError(code, message)
    import pyarrow as pa

    assert child.body is not None
    try:
        if status.get("format") == "json":
            table = _json_table(child.body)
        else:
            table = pa.ipc.open_stream(pa.py_buffer(child.body)).read_all()
    except (pa.ArrowException, ValueError, TypeError, KeyError):
        raise RunnerError(E_INTERNAL, "runner sent an unreadable result") from None
    if table.num_rows != status.get("rows") or table.num_rows > limits.max_output_rows:
        raise RunnerError(E_INTERNAL, "runner result does not match its status")
    return table
