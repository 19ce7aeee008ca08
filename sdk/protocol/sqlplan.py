"""SQL bundles as plans: one SELECT, checked against the plan grammar with a real SQL parser
(sqlglot, DuckDB dialect), then translated into a :class:`sdk.protocol.plan.Plan`.

The grammar is an allow-list: a node is translated only when it is one of the forms below, and
anything else is refused with ``QueryRejectedError`` naming the construct and its line and
column. What a plan cannot express is therefore refused by construction, not by spotting it::

    SELECT <group expr> AS <name>, ...,
           COUNT(*) AS <name>,                                   -- distinct persons
           SUM(LEAST(GREATEST(<row expr>, <lo>), <hi>)) AS <name>, -- clamped sum
           AVG(LEAST(GREATEST(<row expr>, <lo>), <hi>)) AS <name>  -- clamped mean
    FROM <dataset> [AS <alias>]
    [[LEFT | FULL] JOIN <dataset> [AS <alias>] ON <first>.<id> = <other>.<id> | USING (<id>)]
    [WHERE <row predicate>]
    [GROUP BY <group expr or name or position>, ...]

    SELECT <first>.<id> FROM ... [JOIN ...] [WHERE ...]          -- a list release

``<alias>.<id> IS [NOT] NULL`` tests the join (``matched``), never an identifier's value.

``COUNT(*)`` counts persons (the platform's unit), never rows. Row expressions use columns,
literals, comparisons, ``AND``/``OR``/``NOT``, ``IS NULL``, ``IN (literals)``, ``BETWEEN``,
``+ - * /``, ``ABS``, ``COALESCE``, ``CASE WHEN``, ``LOWER``, ``UPPER``, ``TRIM``,
``LENGTH``, ``SUBSTR(x, n, m)``, ``||``/``CONCAT`` and casts to integer, decimal or text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import sqlglot
from sqlglot import exp

from sdk.errors import InputError, QueryRejectedError
from sdk.protocol.plan import (
    FUNCTIONS,
    MAX_INT,
    Call,
    Col,
    DatasetColumns,
    Expr,
    Join,
    Lit,
    Plan,
    PlanGroup,
    PlanMeasure,
    validate,
)

MAX_SQL_BYTES = 256 * 1024
_SELECT_ARGS = {"expressions", "from_", "joins", "where", "group"}
_JOIN_ARGS = {"this", "on", "using", "side", "kind"}
_BINARY: dict[type[exp.Expression], str] = {
    exp.EQ: "eq", exp.NEQ: "ne", exp.LT: "lt", exp.LTE: "le", exp.GT: "gt", exp.GTE: "ge",
    exp.And: "and", exp.Or: "or", exp.Add: "add", exp.Sub: "sub", exp.Mul: "mul",
    exp.Div: "div", exp.DPipe: "concat",
}
_UNARY: dict[type[exp.Expression], str] = {
    exp.Not: "not", exp.Neg: "neg", exp.Abs: "abs", exp.Lower: "lower", exp.Upper: "upper",
    exp.Length: "length",
}
_INT_TYPES = {"INT", "INTEGER", "BIGINT", "SMALLINT", "TINYINT", "HUGEINT"}
_DEC_TYPES = {"DOUBLE", "FLOAT", "DECIMAL", "REAL", "NUMERIC"}
_TEXT_TYPES = {"VARCHAR", "TEXT", "STRING", "CHAR"}


def _where(node: Any) -> str:
    """``line L, column C`` of a node (its first identifier's or token's position)."""
    for candidate in (node, *node.find_all(exp.Identifier, exp.Literal)):
        meta = getattr(candidate, "meta", None) or {}
        if "line" in meta:
            return f"line {meta['line']}, column {meta['col']}"
    return "an unknown position"


def _refuse(what: str, node: Any) -> QueryRejectedError:
    return QueryRejectedError(f"sql: {what} at {_where(node)} is outside the plan grammar")


def _name(node: Any) -> str:
    return type(node).__name__.upper()


class _Translator:
    """Translates one SELECT's parts, resolving table aliases to datasets."""

    def __init__(self, aliases: dict[str, str], datasets: Mapping[str, DatasetColumns]) -> None:
        self.aliases = aliases
        self.datasets = datasets

    def column(self, node: exp.Column) -> Col:
        if node.args.get("db") or node.args.get("catalog"):
            raise _refuse("a qualified column", node)
        if not isinstance(node.this, exp.Identifier):
            raise _refuse("a column that is not a name", node)
        name = node.name
        table = node.table
        if table:
            if table not in self.aliases:
                raise _refuse(f"a column of unknown table {table!r}", node)
            return Col(self.aliases[table], name)
        owners = sorted({ds for ds in self.aliases.values()
                         if name == self.datasets[ds].id_column
                         or name in self.datasets[ds].roles})
        if len(owners) != 1:
            raise _refuse(f"the {'ambiguous' if owners else 'unknown'} column {name!r}", node)
        return Col(owners[0], name)

    def literal(self, node: exp.Literal) -> Lit:
        text = str(node.this)
        if node.is_string:
            return Lit(text)
        try:
            value = int(text)
        except ValueError:
            return Lit(text, decimal=True)
        if abs(value) > MAX_INT:
            raise _refuse("a whole number beyond 2^53", node)
        return Lit(value)

    def expr(self, node: exp.Expression) -> Expr:
        """A row-level expression; aggregates, subqueries and windows are refused."""
        if isinstance(node, exp.Paren):
            return self.expr(node.this)
        if isinstance(node, exp.Column):
            return self.column(node)
        if isinstance(node, exp.Literal):
            return self.literal(node)
        if isinstance(node, exp.Boolean):
            return Lit(bool(node.this))
        if isinstance(node, exp.Null):
            return Lit(None)
        if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) \
                and not node.this.is_string:
            inner = self.literal(node.this)
            if isinstance(inner.value, int) and not isinstance(inner.value, bool):
                return Lit(-inner.value)
            return Lit("-" + str(inner.value), decimal=True)
        binary = _BINARY.get(type(node))
        if binary is not None:
            return self.call(binary, [node.this, node.expression], node)
        unary = _UNARY.get(type(node))
        if unary is not None:
            return self.call(unary, [node.this], node)
        if isinstance(node, exp.Is):
            if not isinstance(node.expression, exp.Null):
                raise _refuse("IS other than IS NULL", node)
            matched = self.matched(node.this)
            if matched is not None:
                return Call("not", (matched,))
            return self.call("is_null", [node.this], node)
        if isinstance(node, exp.In):
            if node.args.get("query") or node.args.get("unnest") or node.args.get("field"):
                raise _refuse("IN over a subquery", node)
            items = node.expressions
            if not items or not all(isinstance(i, exp.Literal | exp.Neg | exp.Boolean)
                                    for i in items):
                raise _refuse("IN over something other than literals", node)
            return self.call("in", [node.this, *items], node)
        if isinstance(node, exp.Between):
            return self.call("between", [node.this, node.args["low"], node.args["high"]], node)
        if isinstance(node, exp.Coalesce):
            return self.call("coalesce", [node.this, *node.expressions], node)
        if isinstance(node, exp.Concat):
            return self.call("concat", list(node.expressions), node)
        if isinstance(node, exp.Trim):
            if node.args.get("expression") or node.args.get("position"):
                raise _refuse("TRIM with characters or a side", node)
            return self.call("trim", [node.this], node)
        if isinstance(node, exp.Substring):
            start, length = node.args.get("start"), node.args.get("length")
            if start is None or length is None:
                raise _refuse("SUBSTR without a start and a length", node)
            return self.call("substr", [node.this, start, length], node)
        if isinstance(node, exp.Case):
            return self.case(node)
        if isinstance(node, exp.Cast | exp.TryCast):
            return self.cast(node)
        if isinstance(node, exp.AggFunc):
            raise _refuse(f"the aggregate {_name(node)} inside a row expression", node)
        if isinstance(node, exp.Subquery | exp.Select | exp.Exists):
            raise _refuse("a subquery", node)
        if isinstance(node, exp.Window):
            raise _refuse("a window function", node)
        raise _refuse(f"the construct {_name(node)}", node)

    def matched(self, node: exp.Expression) -> Call | None:
        """``x.id IS NULL`` tests the join, not a value: ``NOT matched(x)``."""
        inner = node.this if isinstance(node, exp.Paren) else node
        if not isinstance(inner, exp.Column):
            return None
        col = self.column(inner)
        if col.column != self.datasets[col.dataset].id_column:
            return None
        return Call("matched", (Lit(col.dataset),))

    def call(self, fn: str, args: list[exp.Expression], node: exp.Expression) -> Call:
        lo, hi = FUNCTIONS[fn]
        if not lo <= len(args) <= hi:
            raise _refuse(f"{fn} with {len(args)} arguments", node)
        translated = tuple(self.expr(a) for a in args)
        if fn == "substr" and not all(isinstance(a, Lit) and isinstance(a.value, int)
                                      for a in translated[1:]):
            raise _refuse("SUBSTR with a computed start or length", node)
        return Call(fn, translated)

    def case(self, node: exp.Case) -> Expr:
        if node.this is not None:
            raise _refuse("CASE with an operand (write CASE WHEN ...)", node)
        ifs = node.args.get("ifs") or []
        result: Expr = self.expr(node.args["default"]) if node.args.get("default") \
            else Lit(None)
        for branch in reversed(ifs):
            result = Call("if", (self.expr(branch.this), self.expr(branch.args["true"]), result))
        return result

    def cast(self, node: exp.Cast | exp.TryCast) -> Call:
        target = node.to.this.name if hasattr(node.to.this, "name") else str(node.to.this)
        kind = target.upper()
        fn = "to_int" if kind in _INT_TYPES else "to_decimal" if kind in _DEC_TYPES \
            else "to_text" if kind in _TEXT_TYPES else None
        if fn is None:
            raise _refuse(f"a cast to {kind}", node)
        return Call(fn, (self.expr(node.this),))


def _clamp(node: exp.Expression, tr: _Translator) -> tuple[Expr, str, str]:
    """``LEAST(GREATEST(e, lo), hi)`` or ``GREATEST(LEAST(e, hi), lo)`` with literal bounds."""
    def bound(b: exp.Expression) -> str:
        lit = tr.expr(b)
        if not isinstance(lit, Lit) or lit.value is None or isinstance(lit.value, bool) \
                or (isinstance(lit.value, str) and not lit.decimal):
            raise _refuse("a bound that is not a number", b)
        return str(lit.value)

    outer = node
    if isinstance(outer, exp.Least | exp.Greatest):
        args = [outer.this, *outer.expressions]
        if len(args) == 2:
            inner_type = exp.Greatest if isinstance(outer, exp.Least) else exp.Least
            inner = args[0]
            if isinstance(inner, inner_type):
                inner_args = [inner.this, *inner.expressions]
                if len(inner_args) == 2:
                    value = tr.expr(inner_args[0])
                    first, second = bound(inner_args[1]), bound(args[1])
                    lo, hi = (first, second) if isinstance(outer, exp.Least) else (second, first)
                    return value, lo, hi
    raise _refuse("SUM/AVG of an unclamped value (write SUM(LEAST(GREATEST(x, lo), hi)))", node)


def _select_item(item: exp.Expression, tr: _Translator,
                 ) -> tuple[str, PlanGroup | PlanMeasure, exp.Expression]:
    if isinstance(item, exp.Star):
        raise _refuse("SELECT *", item)
    if isinstance(item, exp.Alias):
        name, inner = item.alias, item.this
    elif isinstance(item, exp.Column):
        name, inner = item.name, item
    else:
        raise _refuse("a select item without AS name", item)
    if isinstance(inner, exp.Star):
        raise _refuse("SELECT *", inner)
    if isinstance(inner, exp.Count):
        if not isinstance(inner.this, exp.Star):
            raise _refuse("COUNT of something other than * (COUNT(*) counts persons)", inner)
        return name, PlanMeasure(name, "count"), inner
    if isinstance(inner, exp.Sum | exp.Avg):
        value, lo, hi = _clamp(inner.this, tr)
        return name, PlanMeasure(name, "sum" if isinstance(inner, exp.Sum) else "mean", value,
                                 lo, hi), inner
    if isinstance(inner, exp.AggFunc):
        raise _refuse(f"the aggregate {_name(inner)}", inner)
    return name, PlanGroup(name, tr.expr(inner)), inner


def plan_from_sql(
    sql: str,
    datasets: Mapping[str, DatasetColumns],
    *,
    max_contributions: int = 1,
    domains: Mapping[str, tuple[str, ...]] | None = None,
) -> Plan:
    """Parse one SELECT into a plan and validate it against the column roles.

    ``domains`` gives public domains by group name (from the manifest or the bundle).

    Raises ``QueryRejectedError`` naming the construct and its position for anything outside
    the grammar (several statements, subqueries, windows, set operations, ordering, limits,
    DISTINCT, HAVING, table functions, sampling, cross or non-id joins...), and for plans that
    read a column outside its role.
    """
    if len(sql.encode("utf-8")) > MAX_SQL_BYTES:
        raise QueryRejectedError(f"sql: larger than {MAX_SQL_BYTES} bytes")
    try:
        plan = _translate(sql, datasets, max_contributions, domains)
        # the canonical form, with the plan parser's bounds on size and depth
        plan = Plan.from_dict(plan.to_dict())
    except RecursionError:
        raise QueryRejectedError("sql: nests deeper than the plan language allows") from None
    except InputError as exc:
        raise QueryRejectedError(f"sql: {exc.message}") from None
    validate(plan, datasets)
    return plan


def _translate(sql: str, datasets: Mapping[str, DatasetColumns], max_contributions: int,
               domains: Mapping[str, tuple[str, ...]] | None) -> Plan:
    try:
        statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except sqlglot.errors.ParseError as exc:
        problem = exc.errors[0] if exc.errors else {}
        raise QueryRejectedError(
            f"sql: does not parse at line {problem.get('line', '?')}, column "
            f"{problem.get('col', '?')}") from None
    except sqlglot.errors.SqlglotError:
        raise QueryRejectedError("sql: does not parse") from None
    if len(statements) != 1:
        raise QueryRejectedError(f"sql: expected one SELECT, got {len(statements)} statements")
    select = statements[0]
    if not isinstance(select, exp.Select):
        raise _refuse(f"a statement that is not a SELECT ({_name(select)})", select)
    for key, value in select.args.items():
        if key not in _SELECT_ARGS and value:
            raise _refuse(f"{key.upper().rstrip('_')}", value if isinstance(
                value, exp.Expression) else select)
    aliases: dict[str, str] = {}
    order: list[str] = []

    def table(node: exp.Expression) -> str:
        if not isinstance(node, exp.Table) or not isinstance(node.this, exp.Identifier) \
                or node.args.get("db") or node.args.get("catalog") or node.args.get("sample") \
                or node.args.get("joins") or node.args.get("pivots") \
                or node.args.get("laterals"):
            raise _refuse("a table function, subquery or qualified table", node)
        dataset = node.name
        if dataset not in datasets:
            raise _refuse(f"the unknown dataset {dataset!r}", node)
        if dataset in order:
            raise _refuse(f"dataset {dataset!r} read twice", node)
        alias = node.alias or dataset
        if alias in aliases:
            raise _refuse(f"the alias {alias!r} used twice", node)
        aliases[alias] = dataset
        order.append(dataset)
        return dataset

    source = select.args.get("from_")
    if source is None:
        raise _refuse("a SELECT without FROM", select)
    first = table(source.this)
    tr = _Translator(aliases, datasets)
    joins: list[Join] = []
    for join in select.args.get("joins") or []:
        for key, value in join.args.items():
            if key not in _JOIN_ARGS and value:
                raise _refuse(f"a {key.upper()} join", join)
        side = (join.side or "").upper()
        kind = (join.kind or "").upper()
        if kind not in ("", "INNER", "OUTER") or side not in ("", "LEFT", "FULL") \
                or (kind == "OUTER" and not side):
            raise _refuse(f"a {(side + ' ' + kind).strip()} join", join)
        other = table(join.this)
        first_id, other_id = datasets[first].id_column, datasets[other].id_column
        on, using = join.args.get("on"), join.args.get("using")
        if using:
            names = [u.name for u in using]
            if names != [first_id] or first_id != other_id:
                raise _refuse("a join USING other than both datasets' id column", join)
        elif isinstance(on, exp.EQ) and isinstance(on.this, exp.Column) \
                and isinstance(on.expression, exp.Column):
            pair = {tr.column(on.this), tr.column(on.expression)}
            if pair != {Col(first, first_id), Col(other, other_id)}:
                raise _refuse("a join on anything but the first dataset's and this dataset's "
                              "id columns", on)
        else:
            raise _refuse("a join without ON first.id = other.id", join)
        joins.append(Join(other, {"LEFT": "left", "FULL": "full"}.get(side, "inner")))
    where = None
    if select.args.get("where") is not None:
        where = tr.expr(select.args["where"].this)
    if _is_list(select, tr, first):
        return Plan(tuple(order), tuple(joins), where, (), (), max_contributions, "list")
    groups: list[PlanGroup] = []
    measures: list[PlanMeasure] = []
    group_nodes: dict[str, exp.Expression] = {}
    for item in select.expressions:
        name, part, node = _select_item(item, tr)
        if isinstance(part, PlanGroup):
            domain = (domains or {}).get(name)
            groups.append(PlanGroup(part.name, part.expr, None if domain is None
                                    else tuple(domain)))
            group_nodes[name] = node
        else:
            measures.append(part)
    if not measures:
        raise _refuse("a SELECT without COUNT(*), SUM or AVG", select)
    _check_group_by(select, groups, group_nodes, tr)
    return Plan(tuple(order), tuple(joins), where, tuple(groups), tuple(measures),
                max_contributions)


def _is_list(select: exp.Select, tr: _Translator, first: str) -> bool:
    """``SELECT first.id FROM ...`` without GROUP BY: a list release of the first input's own
    identifiers (the platform decides which, from the joins and the predicate)."""
    items = select.expressions
    if len(items) != 1 or select.args.get("group") is not None:
        return False
    item = items[0].this if isinstance(items[0], exp.Alias) else items[0]
    if not isinstance(item, exp.Column):
        return False
    col = tr.column(item)
    return col == Col(first, tr.datasets[first].id_column)


def _check_group_by(select: exp.Select, groups: list[PlanGroup],
                    nodes: dict[str, exp.Expression], tr: _Translator) -> None:
    """GROUP BY must name exactly the non-aggregate select items (by name, position or the
    same expression)."""
    listed: list[str] = []
    group = select.args.get("group")
    by_expr: dict[Any, str] = {repr(tr.expr(n)): name for name, n in nodes.items()}
    names = [g.name for g in groups]
    translate: Callable[[exp.Expression], Expr] = tr.expr
    for node in (group.expressions if group is not None else []):
        if isinstance(node, exp.Literal) and not node.is_string and str(node.this).isdigit():
            position = int(str(node.this)) - 1
            items = select.expressions
            if not 0 <= position < len(items):
                raise _refuse("a GROUP BY position outside the select list", node)
            item = items[position]
            listed.append(item.alias if isinstance(item, exp.Alias) else item.name)
        elif isinstance(node, exp.Column) and not node.table and node.name in names:
            listed.append(node.name)
        else:
            key = repr(translate(node))
            if key not in by_expr:
                raise _refuse("a GROUP BY expression that is not a select item", node)
            listed.append(by_expr[key])
    if sorted(listed) != sorted(names):
        raise _refuse("GROUP BY that does not list exactly the non-aggregate select items",
                      group if group is not None else select)
