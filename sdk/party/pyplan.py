"""Python bundles as plans: run the author's builder code (RestrictedPython as the compile-time
guard) and take the plan it assigns to ``plan``.

The code sees only the builder API of :mod:`sdk.protocol.planbuilder` (``dataset``, ``query``,
``when_``, ``Decimal``) and a few harmless builtins. It never receives a data value, so it
cannot branch on one: it describes a plan, and the plan is what every party approves and the
worker runs. This runs on the author's machine at ``bundle new``; reviewers and the worker
check the plan, never re-run the code.
"""

from __future__ import annotations

from typing import Any

from sdk.errors import QueryRejectedError
from sdk.protocol.plan import Plan
from sdk.protocol.planbuilder import BUILDER_NAMES

MAX_SOURCE = 256 * 1024
_BUILTINS = ("True", "False", "None", "len", "range", "str", "int", "list", "dict", "tuple",
             "min", "max", "sorted", "enumerate", "zip", "isinstance")


def _refuse_catching(source: str) -> None:
    """No ``try`` in builder code: nothing it could catch comes from data, and a plan that
    depends on which builder call failed is a plan nobody can read."""
    import ast

    try:
        tree = ast.parse(source, filename="<plan>")
    except (SyntaxError, ValueError, RecursionError) as exc:
        raise QueryRejectedError(f"python: does not parse ({type(exc).__name__})") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Try | ast.TryStar):
            raise QueryRejectedError(
                f"python: try at line {node.lineno} (builder code catches nothing; no data "
                "value ever reaches it)")


def plan_from_python(source: str) -> Plan:
    """Run builder code and return the ``Plan`` it assigns to ``plan``.

    Raises ``QueryRejectedError`` for code RestrictedPython refuses (imports, dunder access,
    ``exec``...), code that raises (its exception type and message, which describe code, not
    data: there is none), or code that does not assign a plan.
    """
    from RestrictedPython.compile import compile_restricted_exec
    from RestrictedPython.Eval import default_guarded_getitem
    from RestrictedPython.Guards import (
        full_write_guard,
        guarded_iter_unpack_sequence,
        safe_builtins,
        safer_getattr,
    )

    if len(source.encode("utf-8")) > MAX_SOURCE:
        raise QueryRejectedError(f"python: larger than {MAX_SOURCE} bytes")
    _refuse_catching(source)
    compiled = compile_restricted_exec(source, filename="<plan>")
    if compiled.errors or compiled.code is None:
        raise QueryRejectedError("python: " + "; ".join(compiled.errors[:5])[:400])
    builtins = {k: v for k, v in safe_builtins.items() if k in _BUILTINS}
    for name in _BUILTINS:
        if name not in builtins and name in __builtins__:  # type: ignore[operator]
            builtins[name] = __builtins__[name]  # type: ignore[index]
    namespace: dict[str, Any] = {
        "__builtins__": builtins,
        "_getattr_": safer_getattr,
        "_getitem_": default_guarded_getitem,
        "_getiter_": iter,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
        "_write_": full_write_guard,
        **BUILDER_NAMES,
    }
    try:
        exec(compiled.code, namespace)  # noqa: S102 - RestrictedPython-compiled builder code
    except QueryRejectedError:
        raise
    except Exception as exc:  # the author's own code: its message describes code, not data
        raise QueryRejectedError(f"python: {type(exc).__name__}: {str(exc)[:200]}") from None
    plan = namespace.get("plan")
    if not isinstance(plan, Plan):
        raise QueryRejectedError("python: the code must assign a plan (plan = query(...).build())")
    return plan


__all__ = ["plan_from_python"]
