"""Process isolation of the runner: fresh interpreter per run (T19), minimal environment, empty
working directory, rlimits, process-group kill, no pandas in the child."""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from enclave.runner import RunnerError, RunnerLimits, run_query
from enclave.runner import client as runner_client
from tests.runner.conftest import LIMITS
from tests.runner.test_attacks_sandbox import T19_POISON_FACADE, T19_POISON_MODULE

pytestmark = pytest.mark.timeout(60)

CLEAN = """
def query(tables, params):
    t = tables["people"]
    return t.filter(t["age"] > 70).select("id")
"""


class Spy:
    """Records every Popen the runner makes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[dict[str, Any]] = []
        real = subprocess.Popen

        def popen(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
            cwd = kwargs["cwd"]
            proc = real(args, **kwargs)
            self.calls.append({"args": args, "kwargs": kwargs, "pid": proc.pid,
                               "cwd_listing": os.listdir(cwd)})
            return proc

        monkeypatch.setattr(runner_client.subprocess, "Popen", popen)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    return Spy(monkeypatch)


def test_t19_each_run_is_a_fresh_interpreter(tables: dict[str, bytes], spy: Spy) -> None:
    for poison in (T19_POISON_MODULE, T19_POISON_FACADE):
        with pytest.raises(RunnerError) as info:
            run_query("python", poison, tables, {}, LIMITS)
        assert info.value.code == "E_QUERY_RUNTIME"
    clean = run_query("python", CLEAN, tables, {}, LIMITS)
    again = run_query("python", CLEAN, tables, {}, LIMITS)
    assert clean.equals(again)
    assert clean.num_rows > 0
    pids = [c["pid"] for c in spy.calls]
    assert len(pids) == 4 and len(set(pids)) == 4


def test_spawn_settings(tables: dict[str, bytes], spy: Spy,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEALROOM_WORKER_KEY_PATH", "/run/secrets/worker.key")
    monkeypatch.setenv("PYTHONPATH", "/attacker")
    run_query("sql", "SELECT 1 AS x", tables, {}, LIMITS)
    (call,) = spy.calls
    args, kwargs = call["args"], call["kwargs"]
    assert args[:5] == [sys.executable, "-I", "-B", "-m", "enclave.runner"]
    assert json.loads(args[5]) == LIMITS.to_json()
    env = kwargs["env"]
    assert set(env) <= {"PATH", "LANG", "LC_ALL", "TZ", "OMP_NUM_THREADS",
                        "OPENBLAS_NUM_THREADS", "MALLOC_ARENA_MAX"}
    assert "/run/secrets" not in " ".join(env.values())
    assert kwargs["close_fds"] is True
    assert kwargs["start_new_session"] is True
    assert "preexec_fn" not in kwargs
    assert call["cwd_listing"] == []
    assert not os.path.exists(kwargs["cwd"]), "the working directory is removed afterwards"


def test_deadline_kill_leaves_no_process(tables: dict[str, bytes], spy: Spy) -> None:
    limits = dataclasses.replace(LIMITS, cpu_seconds=60, wall_seconds=1)
    with pytest.raises(RunnerError) as info:
        run_query("python", "def query(tables, params):\n    while True:\n        pass\n",
                  tables, {}, limits)
    assert info.value.code == "E_RESOURCE"
    pgid = spy.calls[0]["pid"]
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)


def _in_child(code: str) -> str:
    """Run ``code`` in an interpreter started the way the runner's child is."""
    proc = subprocess.run(
        [sys.executable, "-I", "-B", "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=30, env=runner_client.child_env(LIMITS),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_child_applies_rlimits() -> None:
    out = _in_child("""
        import json, resource
        from enclave.runner.child import apply_rlimits
        from enclave.runner.limits import RunnerLimits
        apply_rlimits(RunnerLimits(cpu_seconds=3, memory_bytes=1 << 30))
        names = ["RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_NOFILE", "RLIMIT_FSIZE", "RLIMIT_CORE"]
        print(json.dumps({n: resource.getrlimit(getattr(resource, n)) for n in names}))
    """)
    got = json.loads(out)
    assert got["RLIMIT_CPU"][0] == 3
    assert got["RLIMIT_AS"] == [1 << 30, 1 << 30]
    assert got["RLIMIT_NOFILE"] == [64, 64]
    assert got["RLIMIT_FSIZE"] == [0, 0]
    assert got["RLIMIT_CORE"] == [0, 0]
    assert resource.getrlimit(resource.RLIMIT_FSIZE)[0] != 0, "the test process is untouched"


def test_child_never_imports_pandas() -> None:
    out = _in_child("""
        import sys
        from enclave.runner.child import _BlockImports
        sys.meta_path.insert(0, _BlockImports)
        import pyarrow as pa
        from enclave.runner.facade import wrap_tables, unwrap_table
        t = wrap_tables({"t": pa.table({"a": [1, 2, 3], "s": ["x", "y", None]})})["t"]
        r = t.with_column("b", t["a"] * 2).filter(t["a"] > 1)
        print(unwrap_table(r).num_rows, "pandas" in sys.modules)
        try:
            import pandas
        except ImportError:
            print("blocked")
    """)
    assert out.split() == ["2", "False", "blocked"]


def test_rejection_path_imports_no_engine() -> None:
    """Code refused at compile time costs an interpreter and RestrictedPython, nothing more."""
    from enclave.runner.protocol import encode_frame

    argv = runner_client.child_argv(LIMITS)
    argv[1:1] = ["-X", "importtime"]
    request = encode_frame({"v": 1, "kind": "python", "code": "import os", "params": {},
                            "tables": [{"name": "t", "bytes": 10}]})
    proc = subprocess.run(argv, input=request + b"0123456789", capture_output=True,
                          timeout=30, env=runner_client.child_env(LIMITS))
    assert proc.returncode == 0
    assert b"E_QUERY_REJECTED" in proc.stdout
    imported = {line.split("|")[-1].strip() for line in proc.stderr.decode().splitlines()}
    assert "RestrictedPython" in imported
    assert not {"pyarrow", "duckdb", "pandas", "numpy"} & imported


def test_limits_validation() -> None:
    with pytest.raises(ValueError):
        RunnerLimits(cpu_seconds=0)
    with pytest.raises(TypeError):
        RunnerLimits(threads=1.5)  # type: ignore[arg-type]
    assert RunnerLimits.from_json(LIMITS.to_json()) == LIMITS


@pytest.mark.parametrize(("kind", "tables_arg", "params", "error"), [
    ("ruby", {}, {}, ValueError),
    ("sql", {"bad name": b""}, {}, ValueError),
    ("sql", {"t": "not bytes"}, {}, TypeError),
    ("sql", {}, {"x": float("nan")}, ValueError),
    ("sql", {}, {"x": object()}, TypeError),
])
def test_caller_misuse_is_not_a_runner_error(kind: str, tables_arg: dict[str, Any],
                                             params: dict[str, Any],
                                             error: type[Exception]) -> None:
    with pytest.raises(error):
        run_query(kind, "SELECT 1", tables_arg, params, LIMITS)  # type: ignore[arg-type]
