"""The data facade that Python bundles see: ``Table``, ``Column`` and ``GroupBy``.

Promises (defence in depth behind the container, see DESIGN §2):

- Query code never reaches a raw engine object. State lives in ``__slots__`` whose names start
  with ``_`` (refused by RestrictedPython at compile time and by the sandbox's ``_getattr_``,
  which also allows only the names listed in ``PUBLIC`` per class).
- No value ever flows from the data into Python: there is no row access, iteration, length,
  truth value, ``head`` or printing. A query can shape the data but not look at it, so its
  control flow (and hence its errors and run time, to the extent we control them) does not
  depend on cell values.
- Every argument is checked by exact type (``str`` names, plain scalars, facade objects);
  callables are never accepted, so nothing calls back into query code, and no method forwards
  strings to an expression engine (``query``/``eval``), a file or a module.
- Operations run on Apache Arrow (``pyarrow.compute`` kernels and the Acero hash join); pandas
  is not even imported in the runner. Invalid conversions give nulls instead of raising where
  Arrow allows it, so errors depend on types, not on values.

Raised errors: ``TypeError``/``ValueError``/``KeyError`` for misuse; the runner reports only
their type name and line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final

import pyarrow as pa
import pyarrow.compute as pc

from enclave.runner.facade_column import Column, check_name, check_scalar
from enclave.runner.sanitize import OPERATORS, sanitize_methods, sanitized

__all__ = ["Column", "GroupBy", "Table", "concat"]

_JOIN_TYPES: Final = {"inner": "inner", "left": "left outer"}
_AGGREGATIONS: Final = {
    "count": "count",
    "size": "count",
    "sum": "sum",
    "mean": "mean",
    "min": "min",
    "max": "max",
    "nunique": "count_distinct",
}
RIGHT_SUFFIX: Final = "_right"


def _names(args: tuple[Any, ...]) -> list[str]:
    """Accept ``f("a", "b")`` and ``f(["a", "b"])``; return checked names."""
    if len(args) == 1 and type(args[0]) in (list, tuple):
        args = tuple(args[0])
    return [check_name(a) for a in args]


class Table:
    """An immutable table. Build new tables with its methods; read nothing out of it."""

    __slots__ = ("_data", "_token")
    PUBLIC: ClassVar[frozenset[str]] = frozenset({
        "columns", "select", "drop", "rename", "filter", "with_column", "join", "dropna",
        "fillna", "group_by", "distinct", "concat",
    })

    _data: pa.Table
    _token: object

    def __init__(self, data: pa.Table, token: object | None = None) -> None:
        # Only trusted code constructs tables; the class itself is never exposed to queries.
        if type(data) is not pa.Table:
            raise TypeError("Table wraps a pyarrow.Table")
        if len(set(data.column_names)) != data.num_columns:
            raise ValueError("column names must be unique")
        object.__setattr__(self, "_data", data)
        # Columns carry the token of the table whose rows they align with.
        object.__setattr__(self, "_token", token if token is not None else object())

    def __setattr__(self, name: str, value: object) -> None:
        raise TypeError("tables are immutable")

    def __delattr__(self, name: str) -> None:
        raise TypeError("tables are immutable")

    # -- no way to look inside -------------------------------------------------------------
    def __repr__(self) -> str:
        return f"<Table columns={list(self._data.column_names)!r}>"

    def __bool__(self) -> bool:
        raise TypeError("a table has no truth value")

    def __iter__(self) -> Any:
        raise TypeError("tables cannot be iterated")

    def __contains__(self, item: object) -> bool:
        raise TypeError("tables do not support 'in'")

    __hash__ = None  # type: ignore[assignment]

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("tables cannot be pickled")

    # -- trusted side ---------------------------------------------------------------------
    @classmethod
    def _wrap(cls, data: pa.Table) -> Table:
        return cls(data)

    def _unwrap(self) -> pa.Table:
        return self._data

    def _same_rows(self, data: pa.Table) -> Table:
        """A new table whose rows align with this one (its columns stay usable)."""
        return Table(data, self._token)

    def _column_of(self, value: object, what: str) -> Column:
        if type(value) is not Column:
            raise TypeError(f"{what} must be a column")
        if value._token is not self._token:
            raise ValueError(f"{what} comes from another table; derive it from this one")
        return value

    # -- public API -----------------------------------------------------------------------
    @property
    def columns(self) -> tuple[str, ...]:
        """The column names, in order."""
        return tuple(self._data.column_names)

    def __getitem__(self, key: object) -> Any:
        """``t["col"]`` is a Column; ``t[["a", "b"]]`` is ``t.select("a", "b")``."""
        if type(key) is str:
            if key not in self._data.column_names:
                raise KeyError("no such column")
            return Column(self._data.column(key), self._token)
        if type(key) in (list, tuple):
            return self.select(key)
        raise TypeError("index a table with a column name or a list of names")

    def select(self, *names: object) -> Table:
        """Keep the named columns, in the given order."""
        cols = _names(names)
        if not cols:
            raise ValueError("select at least one column")
        return self._same_rows(self._data.select(cols))

    def drop(self, *names: object) -> Table:
        """Remove the named columns."""
        cols = _names(names)
        missing = [c for c in cols if c not in self._data.column_names]
        if missing:
            raise KeyError("no such column")
        return self._same_rows(self._data.drop_columns(cols))

    def rename(self, mapping: object) -> Table:
        """Rename columns: ``t.rename({"old": "new"})``."""
        if type(mapping) is not dict:
            raise TypeError("rename takes a dict of old name to new name")
        pairs = {check_name(k): check_name(v) for k, v in mapping.items()}
        if any(k not in self._data.column_names for k in pairs):
            raise KeyError("no such column")
        return self._same_rows(self._data.rename_columns([pairs.get(c, c) for c in self.columns]))

    def filter(self, mask: object) -> Table:
        """Keep the rows where the boolean column ``mask`` is true (null counts as false)."""
        col = self._column_of(mask, "filter mask")
        if not pa.types.is_boolean(col._arr.type):
            raise TypeError("filter mask must be a boolean column")
        return Table(self._data.filter(col._arr, null_selection_behavior="drop"))

    def with_column(self, name: object, value: object) -> Table:
        """Add or replace column ``name`` with a column of this table or a scalar."""
        name = check_name(name)
        if type(value) is Column:
            arr: pa.ChunkedArray | pa.Array = self._column_of(value, "value")._arr
        else:
            arr = pa.repeat(pa.scalar(check_scalar(value)), self._data.num_rows)
        names = self._data.column_names
        if name in names:
            data = self._data.set_column(names.index(name), name, arr)
        else:
            data = self._data.append_column(name, arr)
        return self._same_rows(data)

    def join(self, other: object, on: object = None, left_on: object = None,
             right_on: object = None, how: object = "inner") -> Table:
        """Join on equal keys (``how`` is ``"inner"`` or ``"left"``; null keys never match).

        Right-hand columns whose names clash get the suffix ``_right``; the key columns are
        kept once. Row order is not defined.
        """
        if type(other) is not Table:
            raise TypeError("join takes another table")
        if type(how) is not str or how not in _JOIN_TYPES:
            raise ValueError("how must be 'inner' or 'left'")
        if on is not None:
            if left_on is not None or right_on is not None:
                raise ValueError("give either on or left_on/right_on")
            left_keys = right_keys = _names((on,))
        else:
            left_keys, right_keys = _names((left_on,)), _names((right_on,))
        if not left_keys or len(left_keys) != len(right_keys):
            raise ValueError("join needs the same number of left and right keys")
        joined = self._data.join(
            other._data, keys=left_keys, right_keys=right_keys, join_type=_JOIN_TYPES[how],
            left_suffix="", right_suffix=RIGHT_SUFFIX, coalesce_keys=True,
        )
        return Table(joined)

    def dropna(self, subset: object = None) -> Table:
        """Drop rows holding a null in any (or any of the ``subset``) column."""
        cols = self.columns if subset is None else _names((subset,))
        mask = None
        for c in cols:
            valid = pc.is_valid(self._data.column(c))
            mask = valid if mask is None else pc.and_(mask, valid)
        if mask is None:
            return Table(self._data)
        return Table(self._data.filter(mask))

    def fillna(self, value: object) -> Table:
        """Replace nulls: one scalar for every column, or a dict of column name to scalar."""
        if type(value) is dict:
            fills = {check_name(k): check_scalar(v) for k, v in value.items()}
        else:
            scalar = check_scalar(value)
            fills = dict.fromkeys(self.columns, scalar)
        data = self._data
        for name, fill in fills.items():
            i = data.column_names.index(name) if name in data.column_names else -1
            if i < 0:
                raise KeyError("no such column")
            col = data.column(i)
            data = data.set_column(i, name, pc.coalesce(col, pa.scalar(fill).cast(col.type)))
        return self._same_rows(data)

    def group_by(self, *keys: object) -> GroupBy:
        """Group by the named key columns; finish with :meth:`GroupBy.agg`."""
        names = _names(keys)
        if not names:
            raise ValueError("group_by needs at least one key")
        missing = [k for k in names if k not in self._data.column_names]
        if missing:
            raise KeyError("no such column")
        return GroupBy(self._data, tuple(names))

    def distinct(self, *names: object) -> Table:
        """The distinct combinations of the named columns (all columns when none named)."""
        cols = _names(names) or list(self.columns)
        return Table(self._data.select(cols).group_by(cols, use_threads=False).aggregate([]))

    def concat(self, other: object) -> Table:
        """Rows of this table followed by the rows of ``other`` (same column names)."""
        return concat([self, other])


class GroupBy:
    """A pending group-by: call :meth:`agg` with named aggregations."""

    __slots__ = ("_data", "_keys")
    PUBLIC: ClassVar[frozenset[str]] = frozenset({"agg"})

    _data: pa.Table
    _keys: tuple[str, ...]

    def __init__(self, data: pa.Table, keys: tuple[str, ...]) -> None:
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_keys", keys)

    def __setattr__(self, name: str, value: object) -> None:
        raise TypeError("group-bys are immutable")

    def __repr__(self) -> str:
        return f"<GroupBy keys={list(self._keys)!r}>"

    def __iter__(self) -> Any:
        raise TypeError("group-bys cannot be iterated")

    def agg(self, **named: object) -> Table:
        """``g.agg(total=("amount", "sum"), n=("id", "count"))`` gives one row per group.

        Functions: count (non-null values), size (rows), sum, mean, min, max, nunique.
        """
        if not named:
            raise ValueError("agg needs at least one named aggregation")
        specs: list[tuple[str, str, pc.FunctionOptions | None]] = []
        out_names: list[str] = []
        for out, spec in named.items():
            out = check_name(out)
            if out in self._keys:
                raise ValueError("an aggregation may not reuse a key name")
            if type(spec) is not tuple or len(spec) != 2:
                raise TypeError("each aggregation is a (column, function) tuple")
            col, fn = check_name(spec[0]), spec[1]
            if type(fn) is not str or fn not in _AGGREGATIONS:
                raise ValueError("unknown aggregation function")
            if col not in self._data.column_names:
                raise KeyError("no such column")
            options = pc.CountOptions(mode="all" if fn == "size" else "only_valid") \
                if fn in ("count", "size") else None
            specs.append((col, _AGGREGATIONS[fn], options))
            out_names.append(out)
        # Aggregate positionally: Acero names outputs "<col>_<fn>", which may collide.
        result = self._data.group_by(list(self._keys), use_threads=False).aggregate(
            [(c, f, o) if o is not None else (c, f) for c, f, o in specs]
        )
        keys = list(self._keys)
        if result.column_names[: len(keys)] == keys:
            names = keys + out_names
        else:
            names = out_names + keys
        return Table(result.rename_columns(names))


@sanitized
def concat(tables: object) -> Table:
    """Stack tables with the same column names (and compatible types) on top of each other."""
    if type(tables) not in (list, tuple) or not tables:
        raise TypeError("concat takes a non-empty list of tables")
    items = list(tables)  # type: ignore[call-overload]
    if any(type(t) is not Table for t in items):
        raise TypeError("concat takes tables only")
    first: Table = items[0]
    names = list(first.columns)
    parts = []
    for t in items:
        if sorted(t.columns) != sorted(names):
            raise ValueError("concat needs tables with the same column names")
        parts.append(t._data.select(names))
    return Table(pa.concat_tables(parts, promote_options="permissive"))


sanitize_methods(Table, Table.PUBLIC | OPERATORS)
sanitize_methods(GroupBy, GroupBy.PUBLIC)


def wrap_tables(tables: Mapping[str, pa.Table]) -> dict[str, Table]:
    """Trusted side: wrap decoded input tables for the query (a fresh dict per run)."""
    return {name: Table._wrap(data) for name, data in tables.items()}


def unwrap_table(result: object) -> pa.Table:
    """Trusted side: the Arrow table behind a query's result; ``TypeError`` if not a Table."""
    if type(result) is not Table:
        raise TypeError("the query must return a Table")
    return result._unwrap()
