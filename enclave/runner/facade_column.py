"""``Column``: an expression result aligned with the rows of one facade ``Table``.

See :mod:`enclave.runner.facade` for the promises. A column supports comparisons
(``== != < <= > >=``), boolean ``& | ~``, arithmetic (``+ - * / // %``, unary ``-``, ``abs()``,
``round()``) with columns of the same table or plain scalars, and the methods listed in
``Column.PUBLIC``. Division by zero gives null; string-to-number casts of malformed values give
null; integer overflow raises ``ArithmeticError`` (Arrow's checked kernels).
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Callable
from typing import Any, ClassVar, Final, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

from enclave.runner.sanitize import OPERATORS, sanitize_methods

MAX_NAME_CHARS: Final = 256
_SCALARS: Final = (bool, int, float, str, type(None))
_INT_RE: Final = r"^[+-]?[0-9]{1,18}$"
_FLOAT_RE: Final = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,3})?$"
_CASTS: Final = {
    "int": pa.int64(),
    "float": pa.float64(),
    "str": pa.string(),
    "bool": pa.bool_(),
    "date": pa.date32(),
}

Operand: TypeAlias = pa.ChunkedArray | pa.Array | pa.Scalar
def check_name(name: object) -> str:
    """A column name: a non-empty ``str`` (exact type) of at most 256 characters."""
    if type(name) is not str:
        raise TypeError("column names are strings")
    if not 0 < len(name) <= MAX_NAME_CHARS:
        raise ValueError("column names have 1 to 256 characters")
    return name


def check_scalar(value: object) -> bool | int | float | str | None:
    """A plain scalar (``bool``, ``int``, ``float``, ``str`` or ``None``, exact types)."""
    if type(value) not in _SCALARS:
        raise TypeError("expected a column or a plain scalar")
    return value  # type: ignore[return-value]


def _is_int(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t))


def _is_temporal(t: pa.DataType) -> bool:
    return bool(pa.types.is_date(t) or pa.types.is_timestamp(t))


def _null_if_zero(x: Operand) -> Operand:
    zero = pc.equal(x, 0)
    if isinstance(x, pa.Scalar):
        return pa.scalar(None, x.type) if zero.as_py() else x
    return pc.if_else(zero, pa.scalar(None, x.type), x)


def _as_float(x: Operand) -> Operand:
    return pc.cast(x, pa.float64())


def _floordiv(a: Operand, b: Operand) -> Operand:
    """Python floor division; exact for integers; division by zero gives null."""
    b = _null_if_zero(b)
    if _is_int(a.type) and _is_int(b.type):
        q = pc.divide(a, b)  # truncates towards zero
        r = pc.subtract(a, pc.multiply(q, b))
        adjust = pc.and_(pc.not_equal(r, 0), pc.not_equal(pc.less(r, 0), pc.less(b, 0)))
        return pc.if_else(adjust, pc.subtract(q, 1), q)
    return pc.floor(pc.divide(_as_float(a), _as_float(b)))


def _mod(a: Operand, b: Operand) -> Operand:
    """Python modulo (sign of the divisor); modulo zero gives null."""
    return pc.subtract(a, pc.multiply(_floordiv(a, b), _null_if_zero(b)))


def _truediv(a: Operand, b: Operand) -> Operand:
    return pc.divide(_as_float(a), _as_float(_null_if_zero(b)))


def _add(a: Operand, b: Operand) -> Operand:
    if pa.types.is_string(a.type) or pa.types.is_large_string(a.type):
        return pc.binary_join_element_wise(a, b, "")
    return pc.add_checked(a, b)


_BINARY: Final[dict[str, Callable[[Operand, Operand], Operand]]] = {
    "add": _add,
    "sub": pc.subtract_checked,
    "mul": pc.multiply_checked,
    "truediv": _truediv,
    "floordiv": _floordiv,
    "mod": _mod,
    "eq": pc.equal,
    "ne": pc.not_equal,
    "lt": pc.less,
    "le": pc.less_equal,
    "gt": pc.greater,
    "ge": pc.greater_equal,
    "and": pc.and_kleene,
    "or": pc.or_kleene,
}


class Column:
    """A column of values aligned with one table; it can be combined but never read."""

    __slots__ = ("_arr", "_token")
    PUBLIC: ClassVar[frozenset[str]] = frozenset({
        "isin", "isna", "notna", "fillna", "lower", "upper", "strip", "sha256", "to_date",
        "year", "month", "day", "abs", "round", "cast",
    })

    _arr: pa.ChunkedArray
    _token: object

    def __init__(self, arr: pa.ChunkedArray | pa.Array, token: object) -> None:
        if isinstance(arr, pa.Array):
            arr = pa.chunked_array([arr])
        object.__setattr__(self, "_arr", arr)
        object.__setattr__(self, "_token", token)

    def __setattr__(self, name: str, value: object) -> None:
        raise TypeError("columns are immutable")

    def __delattr__(self, name: str) -> None:
        raise TypeError("columns are immutable")

    def __repr__(self) -> str:
        return f"<Column {self._arr.type}>"

    def __bool__(self) -> bool:
        raise TypeError("a column has no truth value; combine conditions with & | ~")

    def __iter__(self) -> Any:
        raise TypeError("columns cannot be iterated")

    def __contains__(self, item: object) -> bool:
        raise TypeError("columns do not support 'in'; use isin")

    __hash__ = None  # type: ignore[assignment]

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("columns cannot be pickled")

    # -- plumbing -------------------------------------------------------------------------
    def _new(self, arr: Operand) -> Column:
        if isinstance(arr, pa.Scalar):  # pragma: no cover - kernels keep array shape
            raise TypeError("expected an array result")
        return Column(arr, self._token)

    def _operand(self, other: object) -> Operand:
        if type(other) is Column:
            if other._token is not self._token:
                raise ValueError("columns come from different tables")
            return other._arr
        value = check_scalar(other)
        if type(value) is str and _is_temporal(self._arr.type):
            return pa.scalar(datetime.date.fromisoformat(value)).cast(self._arr.type)
        return pa.scalar(value)

    def _binary(self, op: str, other: object, reflected: bool = False) -> Column:
        b = self._operand(other)
        if reflected:
            return self._new(_BINARY[op](b, self._arr))
        return self._new(_BINARY[op](self._arr, b))

    def _string(self) -> pa.ChunkedArray:
        t = self._arr.type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            raise TypeError("expected a string column")
        return self._arr

    # -- operators ------------------------------------------------------------------------
    def __eq__(self, other: object) -> Column:  # type: ignore[override]
        return self._binary("eq", other)

    def __ne__(self, other: object) -> Column:  # type: ignore[override]
        return self._binary("ne", other)

    def __lt__(self, other: object) -> Column:
        return self._binary("lt", other)

    def __le__(self, other: object) -> Column:
        return self._binary("le", other)

    def __gt__(self, other: object) -> Column:
        return self._binary("gt", other)

    def __ge__(self, other: object) -> Column:
        return self._binary("ge", other)

    def __and__(self, other: object) -> Column:
        return self._binary("and", other)

    def __rand__(self, other: object) -> Column:
        return self._binary("and", other, reflected=True)

    def __or__(self, other: object) -> Column:
        return self._binary("or", other)

    def __ror__(self, other: object) -> Column:
        return self._binary("or", other, reflected=True)

    def __invert__(self) -> Column:
        if not pa.types.is_boolean(self._arr.type):
            raise TypeError("~ needs a boolean column")
        return self._new(pc.invert(self._arr))

    def __add__(self, other: object) -> Column:
        return self._binary("add", other)

    def __radd__(self, other: object) -> Column:
        return self._binary("add", other, reflected=True)

    def __sub__(self, other: object) -> Column:
        return self._binary("sub", other)

    def __rsub__(self, other: object) -> Column:
        return self._binary("sub", other, reflected=True)

    def __mul__(self, other: object) -> Column:
        return self._binary("mul", other)

    def __rmul__(self, other: object) -> Column:
        return self._binary("mul", other, reflected=True)

    def __truediv__(self, other: object) -> Column:
        return self._binary("truediv", other)

    def __rtruediv__(self, other: object) -> Column:
        return self._binary("truediv", other, reflected=True)

    def __floordiv__(self, other: object) -> Column:
        return self._binary("floordiv", other)

    def __rfloordiv__(self, other: object) -> Column:
        return self._binary("floordiv", other, reflected=True)

    def __mod__(self, other: object) -> Column:
        return self._binary("mod", other)

    def __rmod__(self, other: object) -> Column:
        return self._binary("mod", other, reflected=True)

    def __neg__(self) -> Column:
        return self._new(pc.negate_checked(self._arr))

    def __pos__(self) -> Column:
        return self

    def __abs__(self) -> Column:
        return self._new(pc.abs_checked(self._arr))

    def __round__(self, ndigits: object = None) -> Column:
        return self.round(0 if ndigits is None else ndigits)

    # -- methods --------------------------------------------------------------------------
    def abs(self) -> Column:
        """Absolute value."""
        return self.__abs__()

    def round(self, ndigits: object = 0) -> Column:
        """Round half to even to ``ndigits`` decimals."""
        if type(ndigits) is not int or not -18 <= ndigits <= 18:
            raise ValueError("ndigits is an int between -18 and 18")
        return self._new(pc.round(self._arr, ndigits, round_mode="half_to_even"))

    def isin(self, values: object) -> Column:
        """True where the value is one of ``values`` (a list, tuple or set of scalars)."""
        if type(values) not in (list, tuple, set, frozenset):
            raise TypeError("isin takes a list of scalars")
        items = [check_scalar(v) for v in values]  # type: ignore[attr-defined]
        value_set = pa.array(items).cast(self._arr.type) if items else \
            pa.array([], self._arr.type)
        return self._new(pc.is_in(self._arr, value_set=value_set))

    def isna(self) -> Column:
        """True where the value is null."""
        return self._new(pc.is_null(self._arr))

    def notna(self) -> Column:
        """True where the value is not null."""
        return self._new(pc.is_valid(self._arr))

    def fillna(self, value: object) -> Column:
        """Replace nulls by a scalar of a compatible type."""
        fill = pa.scalar(check_scalar(value)).cast(self._arr.type)
        return self._new(pc.coalesce(self._arr, fill))

    def lower(self) -> Column:
        """Lower-case (Unicode)."""
        return self._new(pc.utf8_lower(self._string()))

    def upper(self) -> Column:
        """Upper-case (Unicode)."""
        return self._new(pc.utf8_upper(self._string()))

    def strip(self) -> Column:
        """Remove leading and trailing whitespace."""
        return self._new(pc.utf8_trim_whitespace(self._string()))

    def sha256(self) -> Column:
        """Hex SHA-256 of the UTF-8 bytes of each string (null stays null)."""
        out = [
            None if v is None else hashlib.sha256(v.encode("utf-8")).hexdigest()
            for v in self._string().to_pylist()
        ]
        return self._new(pa.array(out, pa.string()))

    def to_date(self, format: object = "%Y-%m-%d") -> Column:
        """Parse strings to dates with a strptime ``format``; unparsable values give null."""
        t = self._arr.type
        if pa.types.is_date(t):
            return self
        if pa.types.is_timestamp(t):
            return self._new(pc.cast(self._arr, pa.date32()))
        if type(format) is not str or not 0 < len(format) <= 64:
            raise ValueError("format is a short strptime string")
        parsed = pc.strptime(self._string(), format=format, unit="s", error_is_null=True)
        return self._new(pc.cast(parsed, pa.date32()))

    def _date_part(self, fn: Callable[[Operand], Operand]) -> Column:
        if not _is_temporal(self._arr.type):
            raise TypeError("expected a date column (use to_date first)")
        return self._new(pc.cast(fn(self._arr), pa.int64()))

    def year(self) -> Column:
        """The year of a date."""
        return self._date_part(pc.year)

    def month(self) -> Column:
        """The month (1-12) of a date."""
        return self._date_part(pc.month)

    def day(self) -> Column:
        """The day of the month of a date."""
        return self._date_part(pc.day)

    def cast(self, kind: object) -> Column:
        """Convert to ``"int"``, ``"float"``, ``"str"``, ``"bool"`` or ``"date"``.

        Malformed strings and out-of-range floats give null rather than an error.
        """
        if type(kind) is not str or kind not in _CASTS:
            raise ValueError("kind is one of int, float, str, bool, date")
        target = _CASTS[kind]
        arr = self._arr
        if arr.type == target:
            return self
        is_str = pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)
        if kind == "date":
            return self.to_date()
        if is_str and kind in ("int", "float", "bool"):
            text = pc.utf8_trim_whitespace(arr)
            if kind == "bool":
                text = pc.utf8_lower(text)
                ok = pc.is_in(text, value_set=pa.array(["true", "false", "1", "0"]))
            else:
                ok = pc.match_substring_regex(text, _INT_RE if kind == "int" else _FLOAT_RE)
            arr = pc.if_else(ok, text, pa.scalar(None, arr.type))
        elif pa.types.is_floating(arr.type) and kind == "int":
            in_range = pc.and_(pc.greater_equal(arr, -9.2e18), pc.less_equal(arr, 9.2e18))
            arr = pc.if_else(in_range, pc.trunc(arr), pa.scalar(None, arr.type))
        return self._new(pc.cast(arr, target))


sanitize_methods(Column, Column.PUBLIC | OPERATORS)
