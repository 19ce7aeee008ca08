"""Run a compiled Python bundle with an explicit, minimal set of builtins and guards.

The exec globals hold exactly: ``__builtins__`` (the dict :data:`BUILTINS`, never the real
builtins module), ``__name__`` and the RestrictedPython hooks ``_getattr_``, ``_getitem_``,
``_getiter_``, ``_write_`` (``full_write_guard``), ``_inplacevar_``, ``_unpack_sequence_`` and
``_iter_unpack_sequence_``. There is no ``_print_``, ``_apply_``, ``__import__``,
``__metaclass__``: the policy refuses the constructs that would need them.

Attribute access is an allowlist per exact type (facade classes and a few methods of ``str``,
``dict``, ``list``, ``tuple`` and ``set``) and then RestrictedPython's ``safer_getattr``
(underscore names, inspect attributes, ``str.format``); everything else is ``AttributeError``.
Iteration is allowed over plain containers and generator expressions only. RestrictedPython 9.0
removed ``sorted``, ``tuple`` and ``zip`` from ``safe_builtins`` because they iterate in C,
bypassing ``_getiter_``; the versions here call the guard first.
"""

from __future__ import annotations

import builtins
import operator
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

from RestrictedPython.Guards import (
    full_write_guard,
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
    safe_builtins,
    safer_getattr_raise,
)

from enclave.runner.errors import E_CONFIG, E_QUERY_REJECTED, E_QUERY_RUNTIME, RunnerError
from enclave.runner.facade import Column, GroupBy, Table, concat
from enclave.runner.policy import FILENAME

_ATTRIBUTES: Final[dict[type, frozenset[str]]] = {
    Table: Table.PUBLIC,
    Column: Column.PUBLIC,
    GroupBy: GroupBy.PUBLIC,
    str: frozenset({"lower", "upper", "strip", "lstrip", "rstrip", "startswith", "endswith",
                    "replace", "split", "join", "isdigit"}),
    dict: frozenset({"get", "items", "keys", "values"}),
    list: frozenset({"append", "extend", "index", "count", "pop", "insert", "remove"}),
    tuple: frozenset({"index", "count"}),
    set: frozenset({"add", "discard"}),
}
_ITERABLE: Final[frozenset[type]] = frozenset({
    list, tuple, dict, set, frozenset, str, bytes, range, types.GeneratorType,
    type({}.keys()), type({}.values()), type({}.items()),
})
_INDEXABLE: Final[frozenset[type]] = frozenset({list, tuple, dict, str, bytes, range})
_safer_getattr: Final[Callable[[object, str], Any]] = safer_getattr_raise
_INPLACE: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "+=": operator.iadd, "-=": operator.isub, "*=": operator.imul, "/=": operator.itruediv,
    "//=": operator.ifloordiv, "%=": operator.imod, "&=": operator.iand, "|=": operator.ior,
}


def guarded_getattr(obj: object, name: object, *default: object) -> Any:
    """``obj.name`` for allowlisted (type, name) pairs only."""
    if type(name) is not str:
        raise TypeError("attribute names must be str")
    allowed = _ATTRIBUTES.get(type(obj))
    if allowed is None or name not in allowed:
        raise AttributeError(f"attribute {name!r} is not available in query code")
    return _safer_getattr(obj, name)


def guarded_getitem(obj: object, key: object) -> Any:
    """``obj[key]`` on plain containers and on tables (column access)."""
    if type(obj) is Table:
        return obj[key]
    if type(obj) not in _INDEXABLE:
        raise TypeError("this object cannot be indexed in query code")
    return obj[key]  # type: ignore[index]


def guarded_iter(obj: object) -> Iterator[Any]:
    """``iter(obj)`` for plain containers and generators only (never tables or columns)."""
    if type(obj) not in _ITERABLE:
        raise TypeError("this object cannot be iterated in query code")
    return iter(obj)  # type: ignore[call-overload, no-any-return]


def guarded_inplacevar(op: str, target: Any, value: Any) -> Any:
    """``target op= value`` for arithmetic and boolean operators."""
    fn = _INPLACE.get(op)
    if fn is None:
        raise TypeError("this augmented assignment is not allowed in query code")
    return fn(target, value)


def _list(iterable: Iterable[Any] = ()) -> list[Any]:
    return list(guarded_iter(iterable))


def _tuple(iterable: Iterable[Any] = ()) -> tuple[Any, ...]:
    return tuple(guarded_iter(iterable))


def _set(iterable: Iterable[Any] = ()) -> set[Any]:
    return set(guarded_iter(iterable))


def _dict(*args: Any, **kwargs: Any) -> dict[Any, Any]:
    if len(args) > 1:
        raise TypeError("dict expected at most 1 argument")
    if args and type(args[0]) is not dict:
        return dict(_list(args[0]), **kwargs)
    return dict(*args, **kwargs)


def _sorted(iterable: Iterable[Any], *, key: Any = None, reverse: bool = False) -> list[Any]:
    return sorted(guarded_iter(iterable), key=key, reverse=bool(reverse))


def _enumerate(iterable: Iterable[Any], start: int = 0) -> list[tuple[int, Any]]:
    return list(enumerate(guarded_iter(iterable), start))


def _zip(*iterables: Iterable[Any]) -> list[tuple[Any, ...]]:
    return list(zip(*(guarded_iter(i) for i in iterables), strict=False))


def _reduce_with(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if len(args) == 1:
            return fn(guarded_iter(args[0]), **kwargs)
        return fn(*args, **kwargs)
    wrapper.__name__ = fn.__name__
    return wrapper


def _sum(iterable: Iterable[Any], start: Any = 0) -> Any:
    return sum(guarded_iter(iterable), start)


def _any(iterable: Iterable[Any]) -> bool:
    return any(guarded_iter(iterable))


def _all(iterable: Iterable[Any]) -> bool:
    return all(guarded_iter(iterable))


_TYPE_OF_WRAPPER: Final[dict[object, type]] = {
    _list: list, _tuple: tuple, _set: set, _dict: dict,
    int: int, float: float, str: str, bool: bool,
}


def _isinstance(obj: object, classinfo: object) -> bool:
    """``isinstance`` against the plain types query code can name (list, dict, int...)."""
    infos = classinfo if type(classinfo) is tuple else (classinfo,)
    try:
        real = tuple(_TYPE_OF_WRAPPER[c] for c in infos)
    except (KeyError, TypeError):
        raise TypeError("isinstance works with int, float, str, bool, list, tuple, set, dict") \
            from None
    return isinstance(obj, real)


#: Names upstream's ``safe_builtins`` already vets and that we keep as they are.
_FROM_SAFE_BUILTINS: Final = (
    "None", "False", "True", "abs", "bool", "float", "int", "len", "range", "round", "str",
    "ArithmeticError", "AssertionError", "AttributeError", "Exception", "IndexError", "KeyError",
    "LookupError", "TypeError", "ValueError", "ZeroDivisionError",
)

BUILTINS: Final[Mapping[str, object]] = types.MappingProxyType({
    **{name: safe_builtins[name] for name in _FROM_SAFE_BUILTINS},
    "list": _list, "tuple": _tuple, "set": _set, "dict": _dict, "sorted": _sorted,
    "enumerate": _enumerate, "zip": _zip, "min": _reduce_with(min), "max": _reduce_with(max),
    "sum": _sum, "any": _any, "all": _all, "isinstance": _isinstance, "concat": concat,
})


def build_globals() -> dict[str, Any]:
    """Fresh exec globals for one run (a new dict every call; builtins copied)."""
    return {
        "__builtins__": dict(BUILTINS),
        "__name__": "sealroom_query",
        "_getattr_": guarded_getattr,
        "_getitem_": guarded_getitem,
        "_getiter_": guarded_iter,
        "_write_": full_write_guard,
        "_inplacevar_": guarded_inplacevar,
        "_unpack_sequence_": guarded_unpack_sequence,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
    }


def check_globals(glb: Mapping[str, Any]) -> None:
    """Raise ``RunnerError(E_CONFIG)`` unless ``glb`` carries our explicit ``__builtins__``.

    Without it ``exec`` silently inserts the real builtins (RestrictedPython issue #142).
    """
    b = glb.get("__builtins__")
    if type(b) is not dict or b is builtins.__dict__ or set(b) != set(BUILTINS):
        raise RunnerError(E_CONFIG, "exec globals lack the explicit sandbox __builtins__")
    for hook in ("_getattr_", "_getitem_", "_getiter_", "_write_"):
        if hook not in glb:
            raise RunnerError(E_CONFIG, f"exec globals lack the {hook} guard")


def runtime_error(exc: BaseException) -> RunnerError:
    """``E_QUERY_RUNTIME`` naming only the exception type and the innermost query line."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    name = type(exc).__name__
    if not name.isidentifier() or len(name) > 64:
        name = "Exception"
    where = f" at line {line}" if line is not None else ""
    return RunnerError(E_QUERY_RUNTIME, f"{name}{where}")


def run(code: types.CodeType, tables: Mapping[str, Table], params: Any,
        glb: dict[str, Any] | None = None) -> object:
    """Execute the module, then call ``query(tables, params)``; return what it returns.

    Raises ``RunnerError``: ``E_CONFIG`` for bad globals, ``E_QUERY_REJECTED`` when the module
    defines no ``query`` function. Exceptions raised by query code propagate unchanged (the
    caller maps them with :func:`runtime_error` or to ``E_RESOURCE``).
    """
    glb = build_globals() if glb is None else glb
    check_globals(glb)
    exec(code, glb)  # noqa: S102 - restricted code object, explicit builtins and guards
    fn = glb.get("query")
    if type(fn) is not types.FunctionType or fn.__code__.co_filename != FILENAME:
        raise RunnerError(E_QUERY_REJECTED, "query code must define query(tables, params)")
    return fn(dict(tables), params)
