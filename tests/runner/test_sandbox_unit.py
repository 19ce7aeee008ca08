"""Static and in-process checks of the sandbox policy (fast; complements the subprocess corpus).

T11: the builtins allowlist is pinned. T12: exec globals without our ``__builtins__`` refuse to
run. T5/T9: upstream guards still behave. T14/T16: the facade exposes no engine, I/O or
callable-taking method.
"""

from __future__ import annotations

import builtins
import inspect
import string
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest
from RestrictedPython.Guards import safer_getattr_raise

from enclave.runner import facade, facade_column
from enclave.runner.errors import RunnerError
from enclave.runner.facade import Column, GroupBy, Table, wrap_tables
from enclave.runner.policy import compile_query
from enclave.runner.pysandbox import (
    BUILTINS,
    build_globals,
    check_globals,
    guarded_getattr,
    guarded_getitem,
    guarded_iter,
    run,
)

EXPECTED_BUILTINS = {
    "None", "False", "True", "abs", "bool", "float", "int", "len", "range", "round", "str",
    "list", "tuple", "set", "dict", "sorted", "enumerate", "zip", "min", "max", "sum", "any",
    "all", "isinstance", "concat", "ArithmeticError", "AssertionError", "AttributeError",
    "Exception", "IndexError", "KeyError", "LookupError", "TypeError", "ValueError",
    "ZeroDivisionError",
}
DANGEROUS = {
    "eval", "exec", "compile", "open", "__import__", "globals", "locals", "vars", "dir", "type",
    "breakpoint", "input", "memoryview", "help", "exit", "quit", "setattr", "delattr",
    "getattr", "hasattr", "object", "super", "classmethod", "staticmethod", "property",
    "__build_class__", "iter", "next", "map", "filter", "print", "bytearray", "bytes",
    "ExceptionGroup", "BaseExceptionGroup", "id", "hash", "format", "repr", "callable",
}
FORBIDDEN_FACADE_NAMES = {
    "query", "eval", "apply", "applymap", "pipe", "map", "transform", "agg_func", "to_csv",
    "to_pickle", "to_parquet", "to_json", "to_html", "to_pandas", "to_pylist", "to_pydict",
    "to_numpy", "read_csv", "read_pickle", "plot", "style", "head", "tail", "sample", "rows",
    "iterrows", "itertuples", "values", "df", "data", "table", "getattr", "attrgetter",
}


def test_t11_builtins_allowlist_is_pinned() -> None:
    assert set(BUILTINS) == EXPECTED_BUILTINS
    assert not set(BUILTINS) & DANGEROUS
    assert build_globals()["__builtins__"] is not builtins.__dict__


def test_t12_exec_without_explicit_builtins_is_a_config_error() -> None:
    code = compile_query("def query(tables, params):\n    return 1\n")
    for glb in ({}, {"__builtins__": builtins.__dict__}, {"__builtins__": {}},
                {**build_globals(), "_getattr_": None} | {"__builtins__": builtins.__dict__}):
        with pytest.raises(RunnerError) as info:
            run(code, {}, {}, glb=dict(glb))
        assert info.value.code == "E_CONFIG"
    glb = build_globals()
    del glb["_getattr_"]
    with pytest.raises(RunnerError) as info:
        check_globals(glb)
    assert info.value.code == "E_CONFIG"


def test_t5_t9_upstream_guards_still_hold() -> None:
    with pytest.raises(NotImplementedError):
        safer_getattr_raise(string, "Formatter")
    with pytest.raises(NotImplementedError):
        safer_getattr_raise("{0}", "format")

    class FakeString(str):
        def startswith(self, prefix: object, *args: object) -> bool:
            return False

    with pytest.raises(TypeError):
        safer_getattr_raise(1, FakeString("__class__"))
    with pytest.raises(TypeError):
        guarded_getattr(1, FakeString("real"))


def test_getattr_is_an_allowlist() -> None:
    t = wrap_tables({"t": pa.table({"a": [1]})})["t"]
    assert guarded_getattr(t, "select") == t.select
    assert guarded_getattr("x", "lower")() == "x"
    for obj, name in ((t, "_data"), (t, "__class__"), (t, "join_type"), ("x", "format"),
                      ("x", "format_map"), (string, "Formatter"), (len, "__self__"),
                      (1, "real"), (t.select, "__func__"), (KeyError(), "args"),
                      ((x for x in []), "gi_frame"), (int, "mro")):
        with pytest.raises(AttributeError):
            guarded_getattr(obj, name)


def test_getitem_and_iteration_guards() -> None:
    t = wrap_tables({"t": pa.table({"a": [1]})})["t"]
    assert type(guarded_getitem(t, "a")) is Column
    assert guarded_getitem({"k": 1}, "k") == 1
    for obj in (t, t["a"], t.group_by("a"), iter([1]), object()):
        with pytest.raises(TypeError):
            guarded_iter(obj)
    with pytest.raises(TypeError):
        guarded_getitem(t["a"], 0)


def _run(body: str, params: object = None) -> object:
    code = compile_query("def query(tables, params):\n" + textwrap.indent(
        textwrap.dedent(body), "    "))
    return run(code, {}, params)


def test_guarded_builtins_work_on_plain_data() -> None:
    assert _run("return sorted(params['xs'], reverse=True)", {"xs": [2, 3, 1]}) == [3, 2, 1]
    assert _run("return list(zip([1, 2], 'ab'))") == [(1, "a"), (2, "b")]
    assert _run("return [i * v for i, v in enumerate(params)]", [5, 6]) == [0, 6]
    assert _run("return (min(3, 1), max([4, 2]), sum(x for x in range(4)))") == (1, 4, 6)
    assert _run("return isinstance(params, dict) and isinstance(1, (int, float))", {}) is True
    assert _run("d = dict(a=1)\nd['b'] = 2\nx = 1\nx += 2\nreturn (d, x)") == (
        {"a": 1, "b": 2}, 3)
    assert _run("a, (b, c) = [1, (2, 3)]\nreturn a + b + c") == 6
    assert _run("return tuple(set([1, 1])) + (any([0, 1]), all([]))") == (1, True, True)


def test_t14_t16_facade_exposes_no_engine_io_or_callables() -> None:
    for cls in (Table, Column, GroupBy):
        public = cls.PUBLIC
        assert not public & FORBIDDEN_FACADE_NAMES
        assert all(not n.startswith("_") for n in public)
        assert all(hasattr(cls, n) for n in public)
        # Everything else reachable from instances starts with "_" (refused by the sandbox).
        extra = {n for n in dir(cls) if not n.startswith("_")} - public - {"PUBLIC"}
        assert not extra, extra
        for name in public:
            member = inspect.getattr_static(cls, name)
            assert not inspect.ismodule(member)
    source = "".join(Path(m.__file__).read_text() for m in (facade, facade_column)
                     if m.__file__)
    for pattern in (".query(", ".eval(", ".apply(", ".pipe(", ".map(", "getattr(",
                    "attrgetter", "methodcaller", "import pandas", "__import__", "exec(",
                    "open(", "callable("):
        assert pattern not in source, pattern
