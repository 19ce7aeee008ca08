"""Keep Arrow's error texts away from query code.

Arrow messages may quote a value (a failed parse, say). Query code can catch exceptions, so the
facade re-raises Arrow errors as plain builtin errors whose message names only the operation.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Iterable
from typing import Any, Final, TypeVar

import pyarrow as pa

F = TypeVar("F", bound=Callable[..., Any])
_BUILTIN_ERRORS: Final = (KeyError, IndexError, TypeError, NotImplementedError, ArithmeticError,
                          ValueError)
OPERATORS: Final = frozenset({
    "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__and__", "__rand__",
    "__or__", "__ror__", "__invert__", "__add__", "__radd__", "__sub__", "__rsub__",
    "__mul__", "__rmul__", "__truediv__", "__rtruediv__", "__floordiv__", "__rfloordiv__",
    "__mod__", "__rmod__", "__neg__", "__abs__", "__round__", "__getitem__",
})


def sanitized(fn: F) -> F:
    """Re-raise Arrow errors as plain builtin errors whose message names only the operation.

    Arrow messages may quote a value (a failed parse, say); query code can catch exceptions,
    so their text must not carry data into Python.
    """
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except pa.ArrowMemoryError:
            raise MemoryError("out of memory") from None
        except pa.ArrowException as exc:
            base = next((b for b in _BUILTIN_ERRORS if isinstance(exc, b)), ValueError)
            raise base(f"{type(exc).__name__} in {fn.__name__}") from None
    return wrapper  # type: ignore[return-value]


def sanitize_methods(cls: type, names: Iterable[str]) -> None:
    """Wrap the named plain methods of ``cls`` with :func:`sanitized` (properties are skipped)."""
    for name in names:
        member = cls.__dict__.get(name)
        if isinstance(member, types.FunctionType):
            setattr(cls, name, sanitized(member))
