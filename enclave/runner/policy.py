"""Compile-time policy for Python bundles: size and shape caps, then RestrictedPython.

:func:`compile_query` accepts a module that defines ``def query(tables, params)`` and returns a
code object, or raises ``RunnerError(E_QUERY_REJECTED)`` whose message lists compile errors
(they quote code, never data). On top of RestrictedPython 9.0's own policy
(``RestrictingNodeTransformer``: ``_``-names, inspect attributes, ``exec``/``eval``, async,
``try/except*``, ``nonlocal``...), :class:`SealroomPolicy` refuses constructs a query never needs:
``class``, ``import``, ``global``, ``yield``, ``with``, ``print``/``printed``, star-arguments
(``f(*a)``, ``f(**k)``, which would need an ``_apply_`` hook) and starred expressions.
"""

from __future__ import annotations

import ast
from types import CodeType
from typing import Final

from RestrictedPython.compile import compile_restricted_exec
from RestrictedPython.transformer import RestrictingNodeTransformer

from enclave.runner.errors import E_QUERY_REJECTED, RunnerError
from enclave.runner.protocol import MAX_SOURCE_BYTES

FILENAME: Final = "<query>"
MAX_AST_NODES: Final = 100_000
MAX_AST_DEPTH: Final = 100
MAX_ERRORS_SHOWN: Final = 20


class SealroomPolicy(RestrictingNodeTransformer):
    """RestrictedPython's policy, narrowed to what a query needs."""

    def _refuse(self, node: ast.AST, what: str) -> ast.AST:
        self.error(node, f"{what} are not allowed in query code.")
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        return self._refuse(node, "Class definitions")

    def visit_Import(self, node: ast.Import) -> ast.AST:
        return self._refuse(node, "Import statements")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST:
        return self._refuse(node, "Import statements")

    def visit_Global(self, node: ast.Global) -> ast.AST:
        return self._refuse(node, "Global statements")

    def visit_Yield(self, node: ast.Yield) -> ast.AST:
        return self._refuse(node, "Generator functions (yield)")

    def visit_YieldFrom(self, node: ast.YieldFrom) -> ast.AST:
        return self._refuse(node, "Generator functions (yield from)")

    def visit_With(self, node: ast.With) -> ast.AST:
        return self._refuse(node, "With statements")

    def visit_Starred(self, node: ast.Starred) -> ast.AST:
        return self._refuse(node, "Starred expressions and *args calls")

    def visit_Name(self, node: ast.Name) -> ast.AST | None:
        if node.id in ("print", "printed"):
            return self._refuse(node, "print and printed (query code produces no output)")
        result: ast.AST | None = super().visit_Name(node)  # type: ignore[assignment]
        return result

    def visit_Call(self, node: ast.Call) -> ast.AST | None:
        if any(k.arg is None for k in node.keywords):
            return self._refuse(node, "**kwargs calls")
        result: ast.AST | None = super().visit_Call(node)  # type: ignore[assignment]
        return result


def _check_shape(tree: ast.AST) -> None:
    """Refuse trees with too many nodes or too deep nesting (iteratively, no recursion)."""
    count = 0
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_AST_NODES:
            raise RunnerError(E_QUERY_REJECTED, f"query code has more than {MAX_AST_NODES} "
                              "syntax nodes")
        if depth > MAX_AST_DEPTH:
            raise RunnerError(E_QUERY_REJECTED, f"query code is nested more than {MAX_AST_DEPTH}"
                              " levels deep")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def compile_query(source: str) -> CodeType:
    """Compile a Python bundle under the sealroom policy.

    Raises ``RunnerError(E_QUERY_REJECTED)`` for oversize source, syntax errors, parser or
    compiler exhaustion (RecursionError, MemoryError), oversize or deep trees and every policy
    violation.
    """
    if len(source.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
        raise RunnerError(E_QUERY_REJECTED, f"query code exceeds {MAX_SOURCE_BYTES} bytes")
    try:
        tree = ast.parse(source, FILENAME, "exec")
    except SyntaxError as exc:
        raise RunnerError(
            E_QUERY_REJECTED, f"Line {exc.lineno}: SyntaxError: {exc.msg}"
        ) from None
    except (RecursionError, MemoryError, ValueError, OverflowError) as exc:
        raise RunnerError(
            E_QUERY_REJECTED, f"query code could not be parsed ({type(exc).__name__})"
        ) from None
    _check_shape(tree)
    try:
        result = compile_restricted_exec(tree, filename=FILENAME, policy=SealroomPolicy)
    except (RecursionError, MemoryError, ValueError, OverflowError, SyntaxError) as exc:
        raise RunnerError(
            E_QUERY_REJECTED, f"query code could not be compiled ({type(exc).__name__})"
        ) from None
    if result.errors or result.code is None:
        shown = list(result.errors[:MAX_ERRORS_SHOWN])
        if len(result.errors) > MAX_ERRORS_SHOWN:
            shown.append(f"... and {len(result.errors) - MAX_ERRORS_SHOWN} more")
        raise RunnerError(E_QUERY_REJECTED, "; ".join(shown) or "query code was rejected")
    return result.code
