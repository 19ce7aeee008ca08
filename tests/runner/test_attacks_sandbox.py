"""Attack corpus S (T1-T21 of security.md) against the real runner subprocess.

Each attack is one constant; the corpus is a list of (id, code, expected error code). "OK" means
the runner returns a table (the privacy layer, not the runner, decides what leaves). Every run
also asserts that the canary planted in the inputs appears in no error code or message.
"""

from __future__ import annotations

import textwrap

import pytest

from tests.runner.conftest import outcome

REJECTED = "E_QUERY_REJECTED"
RUNTIME = "E_QUERY_RUNTIME"

pytestmark = pytest.mark.timeout(60)


def q(body: str, prelude: str = "") -> str:
    """A bundle whose query() runs ``body`` (indented for you)."""
    return textwrap.dedent(prelude) + "def query(tables, params):\n" + textwrap.indent(
        textwrap.dedent(body).strip("\n"), "    ") + "\n"


T = 't = tables["people"]\n'

# -- T1 dunder walk ---------------------------------------------------------------------------
T1_SUBCLASSES = q("return ().__class__.__base__.__subclasses__()")
T1_MRO = q("return [].__class__.__mro__")
T1_FACADE_PRIVATE = q(T + "return t._data")
T1_FACADE_DICT = q(T + "return t.__dict__")
# -- T2 generator frame escape (CVE-2023-37271) ------------------------------------------------
T2_GENERATOR = """
def t():
    global leak
    leak = g.gi_frame.f_back.f_back
    yield leak

def query(tables, params):
    g = t()
    next(g)
    return leak.f_builtins.get('__import__')('os')
"""
T2_ONE_LINER = q("q = (q.gi_frame.f_back.f_back.f_back for _ in (1,))\nreturn q")
T2_GETATTR = q("g = (x for x in [1])\nreturn getattr(g, 'gi_frame')")
T2_GENEXP_ATTR = q("g = (x for x in [1])\nreturn g.send")
# -- T3 coroutines ----------------------------------------------------------------------------
T3_ASYNC = "async def f():\n    pass\n\n" + q("return f().cr_frame")
# -- T4 str.format traversal ------------------------------------------------------------------
T4_FORMAT = q("return '{0.__class__.__mro__[1]}'.format(1)")
T4_STR_FORMAT = q("return str.format('{0.__class__}', int)")
T4_FORMAT_MAP = q("return '{a.__init__.__globals__}'.format_map({'a': len})")
# -- T5 string.Formatter ----------------------------------------------------------------------
T5_FORMATTER = q("return string.Formatter().vformat('{0.__class__}', [1], {})")
T5_GET_FIELD = q("return Formatter().get_field('0.__class__', [1], {})")
# -- T6 AttributeError.obj --------------------------------------------------------------------
T6_MODULE_OBJ = q("""
try:
    string.nope
except AttributeError as e:
    m = e.obj
return m
""")
T6_FACADE_OBJ = q(T + """
try:
    t.nope
except AttributeError as e:
    return e.obj
""")
T6_TRACEBACK = q("""
try:
    1 / 0
except ZeroDivisionError as e:
    return e.__traceback__
""")
# -- T7 try/except* ---------------------------------------------------------------------------
T7_TRYSTAR = q("""
try:
    1 / 0
except* ZeroDivisionError as eg:
    pass
""")
T7_EXCEPTION_GROUP = q("return ExceptionGroup('x', [ValueError()])")
# -- T8 guard-hook shadowing (CVE-2026-55830) -------------------------------------------------
HOOKS = ("_getattr_", "_getitem_", "_getiter_", "_write_", "_print_", "_inplacevar_", "_apply_")
T8_POSITIONAL_ONLY = {
    f"T8-posonly-{h}": q(f"def f({h}=lambda o: o, /):\n    return tables['people']\nreturn f()")
    for h in HOOKS
}
T8_OTHER_BINDINGS = {
    "T8-kwonly": q("def f(*, _getattr_=None):\n    return 1\nreturn f()"),
    "T8-star-args": q("def f(*_args):\n    return 1\nreturn f()"),
    "T8-star-kwargs": q("def f(**_kw):\n    return 1\nreturn f()"),
    "T8-lambda": q("f = lambda _getattr_: 1\nreturn f(1)"),
    "T8-comprehension": q("return [_x for _x in [1]]"),
    "T8-except-as": q("try:\n    1 / 0\nexcept ZeroDivisionError as _x:\n    pass"),
    "T8-with-as": q("with params as _x:\n    pass"),
    "T8-walrus": q("(_x := 1)\nreturn 1"),
    "T8-global": "global _getattr_\n_getattr_ = len\n" + q("return 1"),
    "T8-nonlocal": q("x = 1\ndef f():\n    nonlocal x\n    x = 2\nf()"),
}
# -- T9 str subclass name bypass --------------------------------------------------------------
T9_FAKE_STRING = """
class FakeString(str):
    def startswith(self, p):
        return False

def query(tables, params):
    return getattr(tables['people'], FakeString('__class__'))
"""
# -- T10 computed names -----------------------------------------------------------------------
T10_CHR = q("return getattr(1, chr(95) * 2 + 'class' + chr(95) * 2)")
T10_UNDERSCORE = q(T + "return getattr(t, '_' + 'data')")
T10_GI = q("g = (x for x in [1])\nreturn getattr(g, 'gi_' + 'frame')")
# -- T11 dangerous builtins -------------------------------------------------------------------
T11_COMPILE_TIME = {
    "T11-eval": q("return eval('1')"),
    "T11-exec": q("return exec('x = 1')"),
    "T11-__import__": q("return __import__('os')"),
    "T11-breakpoint": q("return breakpoint()"),
}
T11_RUNTIME = {
    f"T11-{name}": q(f"return {name}('x')")
    # security.md's list plus a few gadgets; test_sandbox_unit pins the whole allowlist
    for name in ("compile", "open", "globals", "locals", "vars", "dir", "type", "input",
                 "memoryview", "help", "exit", "setattr", "delattr", "getattr", "iter", "map")
}
# -- T12 issue #142 payload -------------------------------------------------------------------
T12_PAYLOAD = q(
    "return getattr(getattr(getattr(getattr([], '__class__'), '__base__'), "
    "'__subclasses__')(), 'pop')()"
)
# -- T13 imports ------------------------------------------------------------------------------
T13_IMPORTS = {
    "T13-import-os": "import os\n" + q("return 1"),
    "T13-from-os": "from os import system\n" + q("return 1"),
    "T13-importlib": q("import importlib\nreturn 1"),
    "T13-star": "from math import *\n" + q("return 1"),
    "T13-pandas": "import pandas as pd\n" + q("return 1"),
    "T13-relative": "from . import child\n" + q("return 1"),
}
# -- T14 pandas query/eval injection ----------------------------------------------------------
T14_QUERY = q(T + "return t.query(\"@pd.compat.os.system('id')\")")
T14_EVAL = q(T + "return t.eval(\"__import__('os').system('id')\", engine='python')")
# -- T15 I/O and callable gadgets -------------------------------------------------------------
T15_GADGETS = {
    f"T15-{name}": q(T + f"return t.{name}({arg})")
    for name, arg in (("to_csv", "'out.csv'"), ("to_pickle", "'x.pkl'"),
                      ("to_parquet", "'x.parquet'"), ("read_csv", "'http://x'"),
                      ("read_pickle", "'x.pkl'"), ("apply", "len"), ("pipe", "len"),
                      ("agg", "len"), ("style", ""), ("to_html", ""), ("plot", ""),
                      ("to_pandas", ""), ("to_pylist", ""), ("head", ""), ("sample", "3"))
}
T15_AGG_CALLABLE = q(T + "return t.group_by('country').agg(n=('age', len))")
T15_FILTER_CALLABLE = q(T + "return t.filter(lambda r: True)")
# -- T16 operator / functools -----------------------------------------------------------------
T16_ATTRGETTER = q("f = lambda: 1\nreturn operator.attrgetter('__globals__')(f)")
T16_REDUCE = q("return functools.reduce(getattr, ['__class__', '__base__'], ())")
T16_SORTED_KEY = q(T + "return sorted([t], key=len)")
# -- T17 raw-row exfiltration -----------------------------------------------------------------
T17_RETURN_TABLE = q(T + "return t")  # row-level output is the runner's job; E_PRIVACY is later
T17_ROWS = q(T + "return t.rows()")
T17_LIST_COLUMN = q(T + "return list(t['email'])")
T17_INDEX_COLUMN = q(T + "return {'x': t['ssn'][0]}")
T17_RETURN_DICT = q(T + "return {'t': t}")
T17_LEN = q(T + "return len(t)")
T17_TRUTH = q(T + "if t['age'] > 30:\n    return t\nreturn t")
T17_IN = q(T + "return t if 'x' in t['email'] else t")
T17_SORTED = q(T + "return sorted(t['email'])")
T17_FOR = q(T + "for row in t:\n    pass\nreturn t")
T17_UNPACK = q(T + "a, b = t['email']\nreturn t")
T17_STR = q(T + "return str(t['email'])")
# -- T18 exfiltration through errors and stdout -----------------------------------------------
T18_RAISE = q(T + "raise ValueError(str(t.head()))")
T18_RAISE_COLUMN = q(T + "raise ValueError(str(t['ssn']))")
T18_ASSERT = q(T + "assert False, t['ssn']")
T18_PRINT = q(T + "print(t)\nreturn t")
T18_PRINTED = q(T + "return printed")
T18_LOOP = q(T + "for r in t['ssn']:\n    1 / 0")
# -- T19 cross-run poisoning (the run-B half is in test_isolation.py) --------------------------
T19_POISON_MODULE = q("math.floor = lambda x: 0\nreturn 1")
T19_POISON_FACADE = q(T + "t.select = len\nreturn t")
T19_POISON_METHOD = q(T + "t.select.extra = 1\nreturn t")
T19_POISON_BUILTINS = q("len.extra = 1\nreturn 1")
# -- T20 f-strings ----------------------------------------------------------------------------
T20_FSTRING_CLASS = q('return f"{().__class__}"')
T20_FSTRING_INIT = q('x = 1\nreturn f"{x.__init__}"')
T20_FSTRING_FORMAT_SPEC = q('return f"{1:{().__class__}}"')
# -- T21 star-args and kwargs calls -----------------------------------------------------------
T21_STAR = q("args = [1]\nreturn max(*args)")
T21_KWARGS = q("return dict(**{'a': 1})")

CORPUS: list[tuple[str, str, str]] = [
    ("T1-subclasses", T1_SUBCLASSES, REJECTED),
    ("T1-mro", T1_MRO, REJECTED),
    ("T1-facade-private", T1_FACADE_PRIVATE, REJECTED),
    ("T1-facade-dict", T1_FACADE_DICT, REJECTED),
    ("T2-generator", T2_GENERATOR, REJECTED),
    ("T2-one-liner", T2_ONE_LINER, REJECTED),
    ("T2-getattr", T2_GETATTR, RUNTIME),
    ("T2-genexp-attr", T2_GENEXP_ATTR, RUNTIME),
    ("T3-async", T3_ASYNC, REJECTED),
    ("T4-format", T4_FORMAT, RUNTIME),
    ("T4-str-format", T4_STR_FORMAT, RUNTIME),
    ("T4-format-map", T4_FORMAT_MAP, RUNTIME),
    ("T5-formatter", T5_FORMATTER, RUNTIME),
    ("T5-get-field", T5_GET_FIELD, RUNTIME),
    ("T6-module-obj", T6_MODULE_OBJ, RUNTIME),
    ("T6-facade-obj", T6_FACADE_OBJ, RUNTIME),
    ("T6-traceback", T6_TRACEBACK, REJECTED),
    ("T7-trystar", T7_TRYSTAR, REJECTED),
    ("T7-exception-group", T7_EXCEPTION_GROUP, RUNTIME),
    *((k, v, REJECTED) for k, v in T8_POSITIONAL_ONLY.items()),
    *((k, v, REJECTED) for k, v in T8_OTHER_BINDINGS.items()),
    ("T9-fake-string", T9_FAKE_STRING, REJECTED),
    ("T10-chr", T10_CHR, RUNTIME),
    ("T10-underscore", T10_UNDERSCORE, RUNTIME),
    ("T10-gi", T10_GI, RUNTIME),
    *((k, v, REJECTED) for k, v in T11_COMPILE_TIME.items()),
    *((k, v, RUNTIME) for k, v in T11_RUNTIME.items()),
    ("T12-issue-142", T12_PAYLOAD, RUNTIME),
    *((k, v, REJECTED) for k, v in T13_IMPORTS.items()),
    ("T14-query", T14_QUERY, RUNTIME),
    ("T14-eval", T14_EVAL, RUNTIME),
    *((k, v, RUNTIME) for k, v in T15_GADGETS.items()),
    ("T15-agg-callable", T15_AGG_CALLABLE, RUNTIME),
    ("T15-filter-callable", T15_FILTER_CALLABLE, RUNTIME),
    ("T16-attrgetter", T16_ATTRGETTER, RUNTIME),
    ("T16-reduce", T16_REDUCE, RUNTIME),
    ("T16-sorted-key", T16_SORTED_KEY, RUNTIME),
    ("T17-return-table", T17_RETURN_TABLE, "OK"),
    ("T17-rows", T17_ROWS, RUNTIME),
    ("T17-list-column", T17_LIST_COLUMN, RUNTIME),
    ("T17-index-column", T17_INDEX_COLUMN, RUNTIME),
    ("T17-return-dict", T17_RETURN_DICT, RUNTIME),
    ("T17-len", T17_LEN, RUNTIME),
    ("T17-truth", T17_TRUTH, RUNTIME),
    ("T17-in", T17_IN, RUNTIME),
    ("T17-sorted", T17_SORTED, RUNTIME),
    ("T17-for", T17_FOR, RUNTIME),
    ("T17-unpack", T17_UNPACK, RUNTIME),
    ("T17-str", T17_STR, RUNTIME),
    ("T18-raise", T18_RAISE, RUNTIME),
    ("T18-raise-column", T18_RAISE_COLUMN, RUNTIME),
    ("T18-assert", T18_ASSERT, RUNTIME),
    ("T18-print", T18_PRINT, REJECTED),
    ("T18-printed", T18_PRINTED, REJECTED),
    ("T18-loop", T18_LOOP, RUNTIME),
    ("T19-poison-module", T19_POISON_MODULE, RUNTIME),
    ("T19-poison-facade", T19_POISON_FACADE, RUNTIME),
    ("T19-poison-method", T19_POISON_METHOD, RUNTIME),
    ("T19-poison-builtins", T19_POISON_BUILTINS, RUNTIME),
    ("T20-fstring-class", T20_FSTRING_CLASS, REJECTED),
    ("T20-fstring-init", T20_FSTRING_INIT, REJECTED),
    ("T20-fstring-format-spec", T20_FSTRING_FORMAT_SPEC, REJECTED),
    ("T21-star", T21_STAR, REJECTED),
    ("T21-kwargs", T21_KWARGS, REJECTED),
]


@pytest.mark.parametrize(("code", "expected"), [pytest.param(c, e, id=i) for i, c, e in CORPUS])
def test_sandbox_attack(tables: dict[str, bytes], code: str, expected: str) -> None:
    got, message = outcome("python", code, tables)
    assert got == expected, message


def test_corpus_covers_t1_to_t21() -> None:
    covered = {int(i.split("-")[0][1:]) for i, _, _ in CORPUS}
    assert covered == set(range(1, 22)) - {19} | {19}


def test_runtime_message_is_type_and_line_only(tables: dict[str, bytes]) -> None:
    code, message = outcome("python", T18_ASSERT, tables)
    assert (code, message) == (RUNTIME, "AssertionError at line 3")


def test_rejection_message_quotes_the_compiler(tables: dict[str, bytes]) -> None:
    code, message = outcome("python", T1_SUBCLASSES, tables)
    assert code == REJECTED
    assert 'Line 2: "__class__" is an invalid attribute name' in message
