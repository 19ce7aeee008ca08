"""The attack corpus of issue 13 ("privacy by construction"), run through the real path.

Every attack is written the way an author would write it: SQL through
:func:`sdk.protocol.sqlplan.plan_from_sql`, Python builder code through
:func:`sdk.party.pyplan.plan_from_python`, signed by the SDK and admitted by
:func:`sdk.protocol.verify.verify_bundle` (the ``bundle new`` check, which calls
:func:`sdk.protocol.admission.admit_bundle`). What gets past the front end runs as a real worker
job (:class:`enclave.job.Job`: sealed uploads, the keyless query runner as its own process,
the release, a signed receipt). A plan the front end refuses is also signed by hand, bypassing
the SDK, to show the worker refuses it too (it is the verifier of record).

Each test asserts one of two outcomes:

* **refused**: ``QueryRejectedError`` (``E_QUERY_REJECTED``) at the front end or admission, or
  the worker answers ``status == "refused"`` with ``error_code == "E_QUERY_REJECTED"``;
* **neutralised**: the run succeeds, no canary is anywhere in the result document, receipt or
  outputs, the receipt has no suppressed-group count and only whole-second timings, and the bit
  is not recoverable: the same approved bundle run over two worlds that differ only in the
  victim's secret gives the same status and error code, and exact (no-DP) outputs that are
  identical, or differ only in the victim's own cells and by at most the per-person bound.

The worlds (``AttackRoom.worlds``, one upload set each): ``base``; ``spend_high`` (the victim's ``crm.spend``, a measure, is
huge instead of 10); ``segment_moved`` (the victim's ``visits.segment``/``exposed``,
dimensions, are "7"/7 instead of "a"/0); ``crm_dup`` (49 extra ``crm`` rows of the victim);
``visits_dup`` (49 extra ``visits`` rows of the victim, with varying dimensions).

Classes and the outcome each rule gives:

1. Broadcast values (join on a constant key, scalar subquery, cross/comma join, constant group
   key, another party's column without a join, IN/EXISTS subqueries, UNION/INTERSECT/EXCEPT,
   windows, ORDER BY/LIMIT, DISTINCT, HAVING/QUALIFY, CTEs, derived tables, LATERAL, table
   functions, ``read_parquet``/``read_csv``, sampling, grouping sets, self joins): **refused**
   (the grammar has no way to cross rows; constant group keys are refused by ``validate``; a
   SQL bundle whose signed plan differs from its SQL is refused; a Python plan naming a
   "dataset" the manifest lacks, such as ``range``, is refused by the bundle check with
   ``E_INPUT``). What the grammar keeps —
   grouping by the other party's value of the *same person*, a key that is constant through
   ``matched()``, a FULL join — is **neutralised**: each person lands only in their own cell.
2. Invented units (``uid || '-' || i``, concatenated copies, reading the id column in any
   expression, joins on a non-id column or expression, joins across id kinds, self joins):
   **refused**. Aliasing a non-id column as ``uid`` and testing the join with ``IS NULL`` are
   **neutralised**: the unit is always the platform's person (the first input's id), and
   ``COUNT(*)`` counts distinct persons whatever the duplicates.
3. Encoding a value into which cell receives units: a measure or private column in a group key
   or predicate, a dimension in a measure: **refused**. Dimension-based keys are per row:
   **neutralised** (the victim moves between their own cells only, by one). Duplicate rows of
   one person (fake units, in either party's data): **neutralised** by per-person bounding,
   outputs move by at most ``max_contributions`` times the measure bound.
4. List mode: the id in the predicate (equality, IN, substring), a private or measure column in
   the predicate, a list to a party that does not own the first input, a list of the other
   party's ids, a list with DP, a FULL join list: **refused**. A tiny list is **neutralised**:
   the run succeeds and the list is withheld, identically whether the victim matches or not; a
   legitimate list does not depend on a measure.
5. One bit per run (CAST failing on the victim's value, division by zero, integer overflow via
   ``mul`` in keys, measures and predicates): **neutralised** (row-level errors become NULL; same status and
   error code in both worlds; no ``suppressed_groups``; timings in whole seconds), including a
   measure whose row value is *text* (``CASE WHEN spend > 1000 THEN 'x' ELSE '0' END``): its
   cast to a number is inside ``TRY`` too (this corpus found it outside, failing the run
   exactly when the victim's spend passed the condition; fixed in ``compile_duckdb``).
6. Python control flow and catchable errors (``if expr``, ``bool``/``int``/``float``/``len``/
   ``hash``/``iter`` of an expression, dict/set keys, ternaries, ``and``/``or``, ``while``,
   ``assert``, indexing, ``in``, comparisons in ``sorted``/``max``, dunders, ``import``,
   ``open``, ``eval``/``exec``, ``getattr``/``type``/``vars``, ``str.format``, ``print``) and
   their SQL analogues (macros, variables, PREPARE/EXECUTE, CALL, ``query()``, ``error()``,
   INSTALL/LOAD, transactions): **refused** at the front end, as is every ``try`` (even a bare
   ``except`` that would swallow the builder's refusal: no data exists when builder code runs,
   so there is nothing to catch).
7. Custom code where an input's owner did not set ``allow_custom_code``: **refused** by the
   front end and by the worker, SQL and Python, whichever inputs are closed. Custom code
   smuggled into a plan bundle's ``code`` is never run (the worker runs the plan):
   **neutralised**.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pytest

from sdk.errors import QueryRejectedError, SealroomError
from sdk.party.pyplan import plan_from_python
from sdk.protocol.admission import plan_columns
from sdk.protocol.clock import utcnow
from sdk.protocol.dsse import Envelope
from sdk.protocol.plan import Call, Col, Join, Lit, Plan, PlanGroup, PlanMeasure
from sdk.protocol.sqlplan import plan_from_sql
from sdk.protocol.verify import verify_bundle
from tests.enclave.test_job_runs import no_canary, output_of, receipt_of
from tests.kit import CANARY, Room

# -- the room, the victim and the worlds --------------------------------------------------------

N_CRM = 30
N_VISITS = 40  # persons 0..29 are in both datasets, 30..39 only in visits
LOW_SPEND = 10.0
HIGH_SPEND = 9.0e15  # fits a BIGINT, overflows once multiplied by 2^53
SPEND_UPPER = 100  # the clamp every spend measure declares
BIG = 2**53  # the largest literal a plan accepts


def uid(i: int) -> str:
    return hashlib.sha256(f"person{i}".encode()).hexdigest()


VICTIM = uid(0)


def crm_table(victim_spend: float = LOW_SPEND, dup: int = 0) -> pa.Table:
    """Alice's customers; the victim is person 0. ``note`` is private and holds the canary."""
    ids = [uid(i) for i in range(N_CRM)]
    converted = [i % 2 for i in range(N_CRM)]
    spend = [victim_spend if i == 0 else float(i % 5 * 10) for i in range(N_CRM)]
    note = [f"{CANARY}-victim" if i == 0 else CANARY for i in range(N_CRM)]
    for _ in range(dup):  # the same person again and again: fake units
        ids.append(VICTIM)
        converted.append(1)
        spend.append(float(SPEND_UPPER))
        note.append(CANARY)
    return pa.table({"uid": ids, "converted": pa.array(converted, pa.int64()),
                     "spend": pa.array(spend, pa.float64()), "note": note})


def visits_table(victim: tuple[str, int] = ("a", 0), dup: int = 0) -> pa.Table:
    """Bob's visitors: ``segment`` a/b alternating, ``exposed`` 0,0,1,1,...; the victim's own
    dimensions are ``victim``."""
    ids = [uid(i) for i in range(N_VISITS)]
    segment = [victim[0] if i == 0 else ("a", "b")[i % 2] for i in range(N_VISITS)]
    exposed = [victim[1] if i == 0 else (i // 2) % 2 for i in range(N_VISITS)]
    for j in range(dup):
        ids.append(VICTIM)
        segment.append(("b", "a")[j % 2])
        exposed.append((j // 2) % 2)
    return pa.table({"uid": ids, "exposed": pa.array(exposed, pa.int64()), "segment": segment})


@dataclass
class AttackRoom(Room):
    """The kit's two-party room plus ``contacts`` (bob's, keyed by *email*, to join across id
    kinds); ``closed`` datasets do not allow custom code. ``worlds`` name upload sets."""

    closed: tuple[str, ...] = ()
    worlds: dict[str, list[Envelope]] = field(default_factory=dict)
    follow_latest: bool = True  # one bundle runs over every world's uploads

    def manifest_dict(self) -> dict[str, Any]:
        doc = super().manifest_dict()
        for d in doc["datasets"]:
            if d["name"] in self.closed:
                d["allow_custom_code"] = False
        doc["datasets"].append({
            "name": "contacts",
            "owner": "bob",
            "schema": [{"name": "email", "type": "string"}, {"name": "tier", "type": "string"}],
            "id_column": "email",
            "id_kind": "email",
            "min_group_size": self.min_group_size,
            "epsilon_budget": self.epsilon_budget,
            "delta_budget": "0.001",
            "roles": {"tier": "dimension"},
        })
        return doc


def _populate(room: AttackRoom) -> AttackRoom:
    crm = {
        "low": room.upload(room.alice, "crm", crm_table(), 1),
        "high": room.upload(room.alice, "crm", crm_table(HIGH_SPEND), 2),
        "dup": room.upload(room.alice, "crm", crm_table(dup=49), 3),
    }
    visits = {
        "a": room.upload(room.bob, "visits", visits_table(), 1),
        "moved": room.upload(room.bob, "visits", visits_table(("7", 7)), 2),
        "dup": room.upload(room.bob, "visits", visits_table(dup=49), 3),
    }
    room.worlds = {
        "base": [crm["low"], visits["a"]],
        "spend_high": [crm["high"], visits["a"]],
        "segment_moved": [crm["low"], visits["moved"]],
        "crm_dup": [crm["dup"], visits["a"]],
        "visits_dup": [crm["low"], visits["dup"]],
    }
    return room


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> AttackRoom:
    return _populate(AttackRoom(tmp_path_factory.mktemp("attacks") / "room"))


@pytest.fixture(scope="module")
def closed_room(tmp_path_factory: pytest.TempPathFactory) -> AttackRoom:
    """No dataset allows custom code."""
    r = AttackRoom(tmp_path_factory.mktemp("closed") / "room", allow_custom_code=False)
    return _populate(r)


@pytest.fixture(scope="module")
def mixed_room(tmp_path_factory: pytest.TempPathFactory) -> AttackRoom:
    """Alice allows custom code on crm; Bob does not on visits."""
    return _populate(AttackRoom(tmp_path_factory.mktemp("mixed") / "room", closed=("visits",)))


# -- the real path ------------------------------------------------------------------------------


def new_bundle(room: AttackRoom, *, sql: str | None = None, python: str | None = None,
               dp: dict[str, Any] | None = None, recipients: tuple[str, ...] = ("alice",),
               max_contributions: int = 1,
               domains: Mapping[str, tuple[str, ...]] | None = None) -> Envelope:
    """``bundle new`` for a plan bundle: the front end translates the author's SQL or runs
    their builder code, the SDK signs, ``verify_bundle`` admits (raises when refused)."""
    if sql is not None:
        plan = plan_from_sql(sql, plan_columns(room.manifest),
                             max_contributions=max_contributions, domains=domains)
        kind, code = "sql", sql
    else:
        assert python is not None
        plan = plan_from_python(python)
        kind, code = "python", python
    bundle = room.plan_bundle(plan, kind=kind, code=code, dp=dp, recipients=recipients)
    verify_bundle(bundle, room.manifest, room.manifest_digest, now=utcnow())
    return bundle


def check_leaks(room: AttackRoom, doc: dict[str, Any]) -> None:
    """No canary anywhere; the receipt carries no suppressed-group count and only whole
    seconds."""
    no_canary(doc, room)
    if doc.get("receipt"):
        receipt = receipt_of(doc)
        assert "suppressed" not in json.dumps(receipt)
        assert all(v % 1000 == 0 for v in receipt["timings_ms"].values()), receipt["timings_ms"]


def run(room: AttackRoom, bundle: Envelope, world: str = "base") -> dict[str, Any]:
    """One real worker job of ``bundle`` over the uploads of ``world``."""
    job = room.job_dir(bundle, room.approvals(bundle), uploads=room.worlds[world])
    doc = room.run(job)
    check_leaks(room, doc)
    return doc


def worker_refuses(room: AttackRoom, bundle: Envelope) -> None:
    doc = run(room, bundle)
    assert doc["status"] == "refused", doc["status"]
    assert doc["error_code"] == "E_QUERY_REJECTED", doc["error_code"]
    assert doc["outputs"] == {}


def front_end_refuses(room: AttackRoom, code: str = "E_QUERY_REJECTED", **kw: Any) -> None:
    """``bundle new`` refuses: ``QueryRejectedError`` (or, for a dataset the manifest does not
    have, the bundle check's ``InputError``), with a message free of data."""
    with pytest.raises(SealroomError) as info:
        new_bundle(room, **kw)
    assert info.value.code == code, (type(info.value).__name__, str(info.value))
    assert CANARY not in str(info.value) and VICTIM not in str(info.value)


def across(room: AttackRoom, bundle: Envelope, *worlds: str) -> list[dict[str, Any]]:
    """Run one approved bundle over several worlds: the status and error code must not depend
    on the victim's secret; returns the decrypted outputs."""
    docs = [run(room, bundle, w) for w in worlds]
    outcomes = {(d["status"], d["error_code"]) for d in docs}
    assert outcomes == {("succeeded", None)}, dict(zip(worlds, outcomes, strict=False))
    return [output_of(room, d) for d in docs]


def cells(out: dict[str, Any], groups: Iterable[str]) -> dict[tuple[Any, ...], dict[str, Any]]:
    cols = out["columns"]
    rows = [dict(zip(cols, r, strict=True)) for r in out["rows"]]
    return {tuple(r[g] for g in groups): r for r in rows}


def moves_within(a: dict[str, Any], b: dict[str, Any], groups: tuple[str, ...],
                 bounds: Mapping[str, float], victim_cells: Iterable[tuple[Any, ...]],
                 l1: Mapping[str, float] | None = None) -> None:
    """Outputs ``a`` and ``b`` release the same cells; cells the victim does not belong to are
    identical; the victim's own cells move by at most ``bounds`` per column, and the total
    (L1 over cells) by at most ``l1``."""
    ca, cb = cells(a, groups), cells(b, groups)
    assert ca, "nothing released: the comparison would be vacuous"
    assert a["columns"] == b["columns"]
    assert set(ca) == set(cb), (sorted(ca), sorted(cb))
    own = set(victim_cells)
    total = dict.fromkeys(bounds, 0.0)
    for key in ca:
        if key not in own:
            assert ca[key] == cb[key], key
            continue
        for col, bound in bounds.items():
            delta = abs(float(ca[key][col]) - float(cb[key][col]))
            assert delta <= bound, (key, col, delta)
            total[col] += delta
    for col, bound in (l1 or {}).items():
        assert total[col] <= bound, (col, total[col])


def param(id_: str, **kw: Any) -> Any:
    return pytest.param(kw, id=id_)


P = 'c = dataset("crm")\nv = dataset("visits")\n'
J = "FROM crm c JOIN visits v ON c.uid = v.uid"
COUNT = PlanMeasure("n", "count")
SPEND = PlanMeasure("spend", "sum", Col("crm", "spend"), "0", str(SPEND_UPPER))
JOINED = (("crm", "visits"), (Join("visits"),))


def hand_plan(where: Any = None, groups: tuple[PlanGroup, ...] = (),
              measures: tuple[PlanMeasure, ...] = (COUNT,), *, inputs: tuple[str, ...] = (),
              joins: tuple[Join, ...] | None = None, release: str = "aggregate") -> Plan:
    """A plan built by hand (what a malicious author signs without the SDK's check)."""
    ins = inputs or JOINED[0]
    js = joins if joins is not None else tuple(Join(d) for d in ins[1:])
    if release == "list":
        measures = ()
    return Plan(ins, js, where, groups, measures, 1, release)


def seg_eq(value: str) -> Call:
    return Call("eq", (Col("visits", "segment"), Lit(value)))


# == front-end refusals (no job needed) ==========================================================

FRONT_END_REFUSALS = [
    # -- 1. broadcast values -------------------------------------------------------------------
    param("c1-sql-join-on-constant-key",
          sql="SELECT v.segment AS s, COUNT(*) AS n FROM crm c JOIN visits v ON 1 = 1 GROUP BY 1"),
    param("c1-sql-join-on-id-and-constant",
          sql="SELECT COUNT(*) AS n FROM crm c JOIN visits v ON c.uid = v.uid AND 1 = 1"),
    param("c1-sql-join-on-constant-equality",
          sql="SELECT COUNT(*) AS n FROM crm c JOIN visits v ON v.segment = 'a'"),
    param("c1-sql-scalar-subquery-key",
          sql="SELECT (SELECT segment FROM visits LIMIT 1) AS s, COUNT(*) AS n FROM crm "
              "GROUP BY 1"),
    param("c1-sql-scalar-subquery-where",
          sql="SELECT COUNT(*) AS n FROM crm WHERE (SELECT exposed FROM visits LIMIT 1) = 1"),
    param("c1-sql-scalar-subquery-measure",
          sql="SELECT COUNT(*) AS n, SUM(LEAST(GREATEST((SELECT spend FROM crm LIMIT 1), 0), "
              "100)) AS s FROM crm"),
    param("c1-sql-cross-join",
          sql="SELECT v.segment AS s, COUNT(*) AS n FROM crm c CROSS JOIN visits v GROUP BY 1"),
    param("c1-sql-comma-join",
          sql="SELECT v.segment AS s, COUNT(*) AS n FROM crm c, visits v GROUP BY 1"),
    param("c1-sql-natural-join",
          sql="SELECT COUNT(*) AS n FROM crm c NATURAL JOIN visits v"),
    param("c1-sql-constant-group-key", sql="SELECT 'x' AS k, COUNT(*) AS n FROM crm GROUP BY 1"),
    param("c1-sql-constant-arithmetic-key",
          sql="SELECT 1 + 1 AS k, COUNT(*) AS n FROM crm GROUP BY 1"),
    param("c1-sql-other-party-column-without-join",
          sql="SELECT v.segment AS s, COUNT(*) AS n FROM crm c GROUP BY 1"),
    param("c1-sql-in-subquery",
          sql=f"SELECT COUNT(*) AS n {J} WHERE v.segment IN (SELECT segment FROM visits)"),
    param("c1-sql-exists", sql=f"SELECT COUNT(*) AS n {J} WHERE EXISTS (SELECT 1 FROM visits)"),
    param("c1-sql-aggregate-as-key-max", sql=f"SELECT MAX(v.segment) AS s, COUNT(*) AS n {J}"),
    param("c1-sql-aggregate-as-key-string-agg",
          sql=f"SELECT STRING_AGG(v.segment, ',') AS s, COUNT(*) AS n {J}"),
    param("c1-sql-aggregate-as-key-any-value",
          sql=f"SELECT ANY_VALUE(v.segment) AS s, COUNT(*) AS n {J}"),
    param("c1-sql-union",
          sql=f"SELECT v.segment AS s, COUNT(*) AS n {J} GROUP BY 1 UNION "
              f"SELECT v.segment AS s, COUNT(*) AS n {J} GROUP BY 1"),
    param("c1-sql-union-all-other-table",
          sql="SELECT COUNT(*) AS n FROM crm UNION ALL SELECT COUNT(*) AS n FROM visits"),
    param("c1-sql-intersect",
          sql="SELECT COUNT(*) AS n FROM crm INTERSECT SELECT COUNT(*) AS n FROM visits"),
    param("c1-sql-except",
          sql="SELECT COUNT(*) AS n FROM crm EXCEPT SELECT COUNT(*) AS n FROM visits"),
    param("c1-sql-window-count", sql=f"SELECT v.segment AS s, COUNT(*) OVER () AS n {J}"),
    param("c1-sql-window-broadcast-key",
          sql=f"SELECT MAX(v.segment) OVER () AS s, COUNT(*) AS n {J} GROUP BY 1"),
    param("c1-sql-window-lag-key",
          sql=f"SELECT LAG(v.segment) OVER (ORDER BY v.exposed) AS s, COUNT(*) AS n {J} "
              "GROUP BY 1"),
    param("c1-sql-order-by-limit",
          sql=f"SELECT v.segment AS s, COUNT(*) AS n {J} GROUP BY 1 ORDER BY 2 LIMIT 1"),
    param("c1-sql-order-by", sql=f"SELECT v.segment AS s, COUNT(*) AS n {J} GROUP BY 1 ORDER BY 1"),
    param("c1-sql-limit-offset", sql=f"SELECT COUNT(*) AS n {J} LIMIT 1 OFFSET 1"),
    param("c1-sql-distinct", sql=f"SELECT DISTINCT v.segment AS s, COUNT(*) AS n {J} GROUP BY 1"),
    param("c1-sql-count-distinct",
          sql=f"SELECT v.segment AS s, COUNT(DISTINCT v.exposed) AS n {J} GROUP BY 1"),
    param("c1-sql-having",
          sql=f"SELECT v.segment AS s, COUNT(*) AS n {J} GROUP BY 1 HAVING COUNT(*) > 1"),
    param("c1-sql-qualify",
          sql=f"SELECT v.segment AS s, COUNT(*) AS n {J} GROUP BY 1 QUALIFY n > 1"),
    param("c1-sql-table-function-range", sql="SELECT COUNT(*) AS n FROM range(10)"),
    param("c1-sql-read-parquet", sql="SELECT COUNT(*) AS n FROM read_parquet('/etc/x.parquet')"),
    param("c1-sql-read-parquet-joined",
          sql="SELECT COUNT(*) AS n FROM crm c JOIN read_parquet('x.parquet') v ON c.uid = v.uid"),
    param("c1-sql-read-csv-in-key",
          sql="SELECT read_csv('/etc/passwd') AS k, COUNT(*) AS n FROM crm GROUP BY 1"),
    param("c1-sql-glob", sql="SELECT COUNT(*) AS n FROM glob('/work/*')"),
    param("c1-sql-quoted-path-table", sql="SELECT COUNT(*) AS n FROM '/etc/x.parquet'"),
    param("c1-sql-qualified-table", sql="SELECT COUNT(*) AS n FROM other.main.crm"),
    param("c1-sql-using-sample", sql="SELECT COUNT(*) AS n FROM crm USING SAMPLE 10%"),
    param("c1-sql-tablesample", sql="SELECT COUNT(*) AS n FROM crm TABLESAMPLE (10 ROWS)"),
    param("c1-sql-random-key", sql="SELECT random() AS k, COUNT(*) AS n FROM crm GROUP BY 1"),
    param("c1-sql-cte", sql="WITH x AS (SELECT * FROM crm) SELECT COUNT(*) AS n FROM x"),
    param("c1-sql-derived-table", sql="SELECT COUNT(*) AS n FROM (SELECT * FROM crm) t"),
    param("c1-sql-lateral", sql="SELECT COUNT(*) AS n FROM crm c, LATERAL (SELECT 1) t"),
    param("c1-sql-grouping-sets",
          sql=f"SELECT v.segment AS s, COUNT(*) AS n {J} GROUP BY GROUPING SETS ((v.segment), ())"),
    param("c1-sql-rollup", sql=f"SELECT v.segment AS s, COUNT(*) AS n {J} GROUP BY ROLLUP (1)"),
    param("c1-sql-self-join", sql="SELECT COUNT(*) AS n FROM crm a JOIN crm b ON a.uid = b.uid"),
    param("c1-sql-pivot", sql="PIVOT crm ON converted USING count(*)"),
    param("c1-sql-select-star", sql=f"SELECT * {J}"),
    param("c1-py-join-on-constant-key",
          python=P + 'plan = query(c).join(v, on=1).count("n").build()\n'),
    param("c1-py-cross-join",
          python=P + 'plan = query(c).join(v, kind="cross").count("n").build()\n'),
    param("c1-py-self-join", python=P + 'plan = query(c).join(c).count("n").build()\n'),
    param("c1-py-scalar-subquery-key",
          python=P + 'sub = query(v).group_by(s=v["segment"]).count("n")\n'
                     'plan = query(c).group_by(s=sub).count("n").build()\n'),
    param("c1-py-constant-group-key", python=P + 'plan = query(c).group_by(k="x").count().build()\n'),
    param("c1-py-constant-when-key",
          python=P + 'plan = query(c).group_by(k=when_(True, "x", "y")).count().build()\n'),
    param("c1-py-other-party-column-without-join",
          python=P + 'plan = query(c).group_by(s=v["segment"]).count("n").build()\n'),
    param("c1-py-union", python=P + 'plan = query(c).count().union(query(v).count()).build()\n'),
    param("c1-py-window", python=P + 'plan = query(c).join(v).group_by(s=v["segment"].over())'
                                     '.count().build()\n'),
    param("c1-py-order-by-limit",
          python=P + 'plan = query(c).count("n").order_by("n").limit(1).build()\n'),
    param("c1-py-distinct", python=P + 'plan = query(c).distinct().count().build()\n'),
    param("c1-py-having",
          python=P + 'plan = query(c).join(v).group_by(s=v["segment"]).count("n")'
                     '.having(v["segment"] == "a").build()\n'),
    param("c1-py-sample", python=P + 'plan = query(c).sample(10).count().build()\n'),
    param("c1-py-read-parquet",
          python='f = dataset("read_parquet(\'/etc/x.parquet\')")\n'
                 'plan = query(f).count().build()\n'),
    param("c1-py-table-function-as-dataset", code="E_INPUT",
          python='plan = query(dataset("range")).count().build()\n'),
    # -- 2. invented units ---------------------------------------------------------------------
    param("c2-sql-id-concat-counter",
          sql=f"SELECT c.uid || '-' || v.exposed AS unit, COUNT(*) AS n {J} GROUP BY 1"),
    param("c2-sql-id-concat-copies",
          sql=f"SELECT c.uid || c.uid AS unit, COUNT(*) AS n {J} GROUP BY 1"),
    param("c2-sql-id-concat-function",
          sql=f"SELECT CONCAT(c.uid, '-', v.segment) AS unit, COUNT(*) AS n {J} GROUP BY 1"),
    param("c2-sql-id-as-key", sql=f"SELECT c.uid AS u, COUNT(*) AS n {J} GROUP BY 1"),
    param("c2-sql-other-id-as-key", sql=f"SELECT v.uid AS u, COUNT(*) AS n {J} GROUP BY 1"),
    param("c2-sql-id-lowered-key", sql=f"SELECT lower(c.uid) AS u, COUNT(*) AS n {J} GROUP BY 1"),
    param("c2-sql-id-prefix-key",
          sql=f"SELECT substr(c.uid, 1, 2) AS p, COUNT(*) AS n {J} GROUP BY 1"),
    param("c2-sql-id-compare-key",
          sql=f"SELECT CASE WHEN c.uid > 'm' THEN 'x' ELSE 'y' END AS k, COUNT(*) AS n {J} "
              "GROUP BY 1"),
    param("c2-sql-id-length-where", sql=f"SELECT COUNT(*) AS n {J} WHERE length(c.uid) > 3"),
    param("c2-sql-id-in-measure",
          sql=f"SELECT SUM(LEAST(GREATEST(CAST(c.uid AS INT), 0), 1)) AS n {J}"),
    param("c2-sql-count-column", sql=f"SELECT COUNT(c.uid) AS n {J}"),
    param("c2-sql-join-on-non-id", sql="SELECT COUNT(*) AS n FROM crm c JOIN visits v "
                                       "ON c.uid = v.segment"),
    param("c2-sql-join-non-id-both",
          sql="SELECT COUNT(*) AS n FROM crm c JOIN visits v ON c.converted = v.exposed"),
    param("c2-sql-join-using-non-id",
          sql="SELECT COUNT(*) AS n FROM crm c JOIN visits v USING (segment)"),
    param("c2-sql-join-on-id-expression",
          sql="SELECT COUNT(*) AS n FROM crm c JOIN visits v ON lower(c.uid) = v.uid"),
    param("c2-sql-join-across-id-kinds",
          sql="SELECT k.tier AS t, COUNT(*) AS n FROM crm c JOIN contacts k ON c.uid = k.email "
              "GROUP BY 1"),
    param("c2-py-id-concat-counter",
          python=P + 'plan = query(c).join(v).group_by(unit=c["uid"].concat("-", v["exposed"]))'
                     '.count().build()\n'),
    param("c2-py-id-concat-copies",
          python=P + 'plan = query(c).group_by(unit=c["uid"].concat(c["uid"])).count().build()\n'),
    param("c2-py-id-as-key", python=P + 'plan = query(c).group_by(u=c["uid"]).count().build()\n'),
    param("c2-py-id-prefix-key",
          python=P + 'plan = query(c).group_by(u=c["uid"].substr(1, 2)).count().build()\n'),
    param("c2-py-id-length-where",
          python=P + 'plan = query(c).where(c["uid"].length() > 3).count().build()\n'),
    param("c2-py-id-in-measure",
          python=P + 'plan = query(c).sum("s", c["uid"].to_int(), lower=0, upper=1).build()\n'),
    param("c2-py-join-on-non-id",
          python=P + 'plan = query(c).join(v, on="segment").count().build()\n'),
    param("c2-py-join-across-id-kinds",
          python=P + 'k = dataset("contacts")\n'
                     'plan = query(c).join(k).group_by(t=k["tier"]).count().build()\n'),
    param("c2-py-copies-of-a-dataset",
          python=P + 'plan = query(c).join(dataset("crm")).count().build()\n'),
    # -- 3. encoding a value into which cell receives units --------------------------------------
    param("c3-sql-measure-threshold-key",
          sql=f"SELECT CASE WHEN c.spend > 50 THEN 'x' ELSE 'y' END AS k, COUNT(*) AS n {J} "
              "GROUP BY 1", domains={"k": ("x", "y")}),
    param("c3-sql-measure-text-key",
          sql=f"SELECT CAST(c.spend AS VARCHAR) AS k, COUNT(*) AS n {J} GROUP BY 1"),
    param("c3-sql-measure-digit-key",
          sql=f"SELECT substr(CAST(c.spend AS VARCHAR), 1, 1) AS k, COUNT(*) AS n {J} GROUP BY 1"),
    param("c3-sql-measure-as-key", sql=f"SELECT c.converted AS k, COUNT(*) AS n {J} GROUP BY 1"),
    param("c3-sql-measure-mixed-into-dimension-key",
          sql=f"SELECT CASE WHEN c.spend > 50 THEN v.segment ELSE 'y' END AS k, COUNT(*) AS n "
              f"{J} GROUP BY 1"),
    param("c3-sql-measure-in-where", sql=f"SELECT COUNT(*) AS n {J} WHERE c.spend > 50"),
    param("c3-sql-private-key", sql=f"SELECT c.note AS k, COUNT(*) AS n {J} GROUP BY 1"),
    param("c3-sql-private-length-key",
          sql=f"SELECT length(c.note) AS k, COUNT(*) AS n {J} GROUP BY 1"),
    param("c3-sql-private-in-where", sql=f"SELECT COUNT(*) AS n {J} WHERE c.note = 'x'"),
    param("c3-sql-private-unqualified", sql=f"SELECT note AS k, COUNT(*) AS n {J} GROUP BY 1"),
    param("c3-sql-private-in-measure",
          sql=f"SELECT SUM(LEAST(GREATEST(length(c.note), 0), 100)) AS s {J}"),
    param("c3-sql-dimension-in-measure",
          sql=f"SELECT SUM(LEAST(GREATEST(CASE WHEN v.segment = 'a' THEN 1 ELSE 0 END, 0), 1)) "
              f"AS s {J}"),
    param("c3-sql-dimension-times-measure",
          sql=f"SELECT SUM(LEAST(GREATEST(c.spend * v.exposed, 0), 100)) AS s {J}"),
    param("c3-sql-matched-in-measure",
          sql="SELECT SUM(LEAST(GREATEST(CASE WHEN v.uid IS NULL THEN 1 ELSE 0 END, 0), 1)) AS s "
              "FROM crm c LEFT JOIN visits v ON c.uid = v.uid"),
    param("c3-py-measure-threshold-key",
          python=P + 'plan = query(c).join(v).group_by(k=when_(c["spend"] > 50, "x", "y"))'
                     '.count().build()\n'),
    param("c3-py-measure-text-key",
          python=P + 'plan = query(c).group_by(k=c["spend"].to_text()).count().build()\n'),
    param("c3-py-measure-in-where",
          python=P + 'plan = query(c).where(c["spend"] > 50).count().build()\n'),
    param("c3-py-private-key", python=P + 'plan = query(c).group_by(k=c["note"]).count().build()\n'),
    param("c3-py-private-in-where",
          python=P + 'plan = query(c).where(c["note"] == "x").count().build()\n'),
    param("c3-py-dimension-in-measure",
          python=P + 'plan = query(c).join(v).sum("s", when_(v["segment"] == "a", 1, 0), '
                     'lower=0, upper=1).build()\n'),
    param("c3-py-matched-in-measure",
          python=P + 'plan = query(c).join(v, kind="left").sum("s", when_(v.matched(), 1, 0), '
                     'lower=0, upper=1).build()\n'),
    # -- 4. list mode: choosing which ids to emit -----------------------------------------------
    param("c4-sql-list-id-equals",
          sql=f"SELECT c.uid {J} WHERE c.uid = '{VICTIM}'"),
    param("c4-sql-list-id-in",
          sql=f"SELECT c.uid {J} WHERE c.uid IN ('{VICTIM}', '{uid(1)}')"),
    param("c4-sql-list-id-prefix", sql=f"SELECT c.uid {J} WHERE substr(c.uid, 1, 8) = "
                                       f"'{VICTIM[:8]}'"),
    param("c4-sql-list-other-id-equals", sql=f"SELECT c.uid {J} WHERE v.uid = '{VICTIM}'"),
    param("c4-sql-list-private-predicate", sql=f"SELECT c.uid {J} WHERE c.note = '{CANARY}'"),
    param("c4-sql-list-measure-predicate", sql=f"SELECT c.uid {J} WHERE c.spend > 50"),
    param("c4-sql-list-to-non-owner", sql=f"SELECT c.uid {J} WHERE v.segment = 'a'",
          recipients=("bob",)),
    param("c4-sql-list-to-both", sql=f"SELECT c.uid {J} WHERE v.segment = 'a'",
          recipients=("alice", "bob")),
    param("c4-sql-list-of-other-partys-ids", sql=f"SELECT v.uid {J} WHERE v.segment = 'a'"),
    param("c4-sql-list-with-dp", sql=f"SELECT c.uid {J} WHERE v.segment = 'a'",
          dp={"epsilon": "1"}),
    param("c4-sql-list-full-join",
          sql="SELECT c.uid FROM crm c FULL JOIN visits v ON c.uid = v.uid"),
    param("c4-sql-list-distinct", sql=f"SELECT DISTINCT c.uid {J}"),
    param("c4-sql-list-limit", sql=f"SELECT c.uid {J} LIMIT 1"),
    param("c4-py-list-id-equals",
          python=P + f'plan = query(c).join(v).where(c["uid"] == "{VICTIM}").list_ids().build()\n'),
    param("c4-py-list-id-in",
          python=P + f'plan = query(c).join(v).where(c["uid"].isin("{VICTIM}")).list_ids()'
                     '.build()\n'),
    param("c4-py-list-private-predicate",
          python=P + f'plan = query(c).join(v).where(c["note"] == "{CANARY}").list_ids()'
                     '.build()\n'),
    param("c4-py-list-measure-predicate",
          python=P + 'plan = query(c).join(v).where(c["spend"] > 50).list_ids().build()\n'),
    param("c4-py-list-to-non-owner",
          python=P + 'plan = query(c).join(v).where(v["segment"] == "a").list_ids().build()\n',
          recipients=("bob",)),
    param("c4-py-list-of-other-partys-ids",
          python=P + 'plan = query(v).join(c).where(v["segment"] == "a").list_ids().build()\n'),
    param("c4-py-list-with-dp",
          python=P + 'plan = query(c).join(v).where(v["segment"] == "a").list_ids().build()\n',
          dp={"epsilon": "1"}),
    param("c4-py-list-full-join",
          python=P + 'plan = query(c).join(v, kind="full").list_ids().build()\n'),
    param("c4-py-list-with-measures",
          python=P + 'plan = query(c).join(v).count().list_ids().build()\n'),
    # -- 6. control flow: SQL analogues -----------------------------------------------------------
    param("c6-sql-create-macro", sql="CREATE MACRO f(x) AS x; SELECT COUNT(*) AS n FROM crm"),
    param("c6-sql-set-variable", sql="SET VARIABLE x = 1"),
    param("c6-sql-getvariable",
          sql="SELECT getvariable('x') AS k, COUNT(*) AS n FROM crm GROUP BY 1"),
    param("c6-sql-prepare", sql="PREPARE q AS SELECT COUNT(*) AS n FROM crm"),
    param("c6-sql-execute", sql="EXECUTE q"),
    param("c6-sql-call", sql="CALL pragma_version()"),
    param("c6-sql-query-eval", sql="SELECT COUNT(*) AS n FROM query('SELECT * FROM crm')"),
    param("c6-sql-error-function",
          sql=f"SELECT COUNT(*) AS n {J} WHERE v.segment = 'a' OR error('boom')"),
    param("c6-sql-install", sql="INSTALL httpfs"),
    param("c6-sql-load", sql="LOAD httpfs"),
    param("c6-sql-transaction", sql="BEGIN TRANSACTION; SELECT COUNT(*) AS n FROM crm; COMMIT"),
    param("c6-sql-copy-out", sql="COPY crm TO '/tmp/crm.csv'"),
    param("c6-sql-attach", sql="ATTACH '/tmp/x.db'"),
    param("c6-sql-pragma", sql="PRAGMA enable_external_access"),
    param("c6-sql-getenv", sql="SELECT getenv('HOME') AS k, COUNT(*) AS n FROM crm GROUP BY 1"),
    param("c6-sql-like", sql=f"SELECT COUNT(*) AS n {J} WHERE v.segment LIKE 'a%'"),
    param("c6-sql-regexp", sql=f"SELECT COUNT(*) AS n {J} WHERE regexp_matches(v.segment, 'a')"),
    param("c6-sql-hash-function", sql=f"SELECT hash(v.segment) AS k, COUNT(*) AS n {J} GROUP BY 1"),
    param("c6-sql-does-not-parse", sql="SELEKT COUNT(*) AS n FROM crm"),
]


@pytest.mark.parametrize("attack", FRONT_END_REFUSALS)
def test_front_end_refuses(room: AttackRoom, attack: dict[str, Any]) -> None:
    front_end_refuses(room, **attack)


# -- 6. Python control flow: data never reaches Python ------------------------------------------

EXPR = 'e = c["spend"]\n'
PLAN = 'plan = query(c).join(v).group_by(s=v["segment"]).count("n").build()\n'
PYTHON_CONTROL_FLOW = {
    "c6-py-if-on-expression": 'if e > 0:\n    x = 1\n',
    "c6-py-bool": 'x = bool(e)\n',
    "c6-py-truthiness-not": 'x = not e\n',
    "c6-py-int": 'x = int(e)\n',
    "c6-py-float": 'x = float(e)\n',
    "c6-py-len": 'x = len(e)\n',
    "c6-py-hash": 'x = hash(e)\n',
    "c6-py-for-loop": 'for x in e:\n    pass\n',
    "c6-py-list-of-expression": 'x = list(e)\n',
    "c6-py-unpacking": 'a, b = e\n',
    "c6-py-dict-key": 'x = {e: 1}\n',
    "c6-py-set-member": 'x = {e}\n',
    "c6-py-ternary": 'x = 1 if e > 3 else 0\n',
    "c6-py-and-short-circuit": 'x = (e > 3) and 1\n',
    "c6-py-or-short-circuit": 'x = (e > 3) or 1\n',
    "c6-py-while": 'while e > 3:\n    break\n',
    "c6-py-assert": 'assert e > 3\n',
    "c6-py-index-by-expression": 'x = [0, 1][e > 3]\n',
    "c6-py-range-of-expression": 'x = range(e)\n',
    "c6-py-in-list": 'x = e in [1, 2]\n',
    "c6-py-chained-comparison": 'x = 1 < e < 3\n',
    "c6-py-sorted": 'x = sorted([e, c["converted"]])\n',
    "c6-py-max": 'x = max(e, c["converted"])\n',
    "c6-py-try-except-exception": 'try:\n    x = int(e > 50)\nexcept Exception:\n    x = 0\n',
    "c6-py-try-finally": 'try:\n    x = int(e)\nfinally:\n    pass\n',
    "c6-py-dunder-class": 'x = e.__class__\n',
    "c6-py-dunder-globals": 'x = query.__globals__\n',
    "c6-py-dunder-dict": 'x = c.__dict__\n',
    "c6-py-dunder-subclasses": 'x = ().__class__.__bases__[0].__subclasses__()\n',
    "c6-py-getattr-dunder": 'x = getattr(e, "__class__")\n',
    "c6-py-private-attribute": 'x = e._call\n',
    "c6-py-import-os": 'import os\n',
    "c6-py-from-import": 'from os import system\n',
    "c6-py-dunder-import": 'x = __import__("os")\n',
    "c6-py-open": 'x = open("/etc/passwd")\n',
    "c6-py-with-open": 'with open("/etc/passwd") as f:\n    pass\n',
    "c6-py-eval": 'x = eval("1")\n',
    "c6-py-exec": 'exec("x = 1")\n',
    "c6-py-compile": 'x = compile("1", "f", "eval")\n',
    "c6-py-type": 'x = type(e)\n',
    "c6-py-vars": 'x = vars(e)\n',
    "c6-py-globals": 'x = globals()\n',
    "c6-py-fstring-dunder": 'x = f"{e.__class__}"\n',
    "c6-py-str-format": 'x = "{0.__class__}".format(e)\n',
    "c6-py-print": 'print(e)\n',
    "c6-py-raise": 'raise ValueError("x")\n',
    "c6-py-write-builder-attribute": 'query.x = 1\n',
    "c6-py-literal-beyond-2-53": 'x = e > 2 ** 60\n',
    "c6-py-float-literal": 'x = e > 1.5\n',
}


@pytest.mark.parametrize("body", list(PYTHON_CONTROL_FLOW.values()),
                         ids=list(PYTHON_CONTROL_FLOW))
def test_python_control_flow_is_refused(room: AttackRoom, body: str) -> None:
    front_end_refuses(room, python=P + EXPR + body + PLAN)


def test_python_no_plan_is_refused(room: AttackRoom) -> None:
    front_end_refuses(room, python=P + 'q = query(c).count("n")\n')


def test_python_try_is_refused_even_bare(room: AttackRoom) -> None:
    """c6-py-try-except-bare: a bare ``except`` could swallow the builder's refusal; no data
    ever reaches builder code, so nothing it could branch on exists, but a plan chosen by which
    builder call failed is unreadable: the front end refuses every ``try``."""
    code = P + (
        'try:\n'
        '    rich = int(c["spend"] > 50)\n'
        'except:\n'
        '    rich = 0\n'
        'key = v["segment"] if rich else v["exposed"].to_text()\n'
        'plan = query(c).join(v).group_by(k=key).count("n").build()\n'
    )
    front_end_refuses(room, python=code)


# == worker refusals: plans signed by hand, bypassing the SDK's check ============================

WORKER_REFUSALS = [
    param("c1-constant-group-key", plan=hand_plan(groups=(PlanGroup("k", Lit("x")),))),
    param("c1-constant-arithmetic-key",
          plan=hand_plan(groups=(PlanGroup("k", Call("add", (Lit(1), Lit(1)))),))),
    param("c1-other-party-column-without-join",
          plan=hand_plan(groups=(PlanGroup("s", Col("visits", "segment")),), inputs=("crm",))),
    param("c1-matched-of-a-dataset-not-joined",
          plan=hand_plan(groups=(PlanGroup("m", Call("matched", (Lit("visits"),))),),
                         inputs=("crm",))),
    param("c1-sql-whose-plan-differs",
          plan=hand_plan(where=seg_eq("a"), groups=(PlanGroup("e", Col("visits", "exposed")),)),
          kind="sql", code=f"SELECT v.exposed AS e, COUNT(*) AS n {J} GROUP BY 1"),
    param("c2-id-as-key", plan=hand_plan(groups=(PlanGroup("u", Col("crm", "uid")),))),
    param("c2-id-concat-counter",
          plan=hand_plan(groups=(PlanGroup("u", Call("concat", (
              Col("crm", "uid"), Lit("-"), Col("visits", "exposed")))),))),
    param("c2-id-in-measure",
          plan=hand_plan(measures=(PlanMeasure("s", "sum", Call("length", (Col("crm", "uid"),)),
                                               "0", "100"),))),
    param("c2-join-across-id-kinds",
          plan=hand_plan(groups=(PlanGroup("t", Col("contacts", "tier")),),
                         inputs=("crm", "contacts"))),
    param("c3-measure-threshold-key",
          plan=hand_plan(groups=(PlanGroup("k", Call("if", (
              Call("gt", (Col("crm", "spend"), Lit(50))), Lit("x"), Lit("y"))), ("x", "y")),))),
    param("c3-measure-in-where", plan=hand_plan(where=Call("gt", (Col("crm", "spend"), Lit(50))))),
    param("c3-private-key", plan=hand_plan(groups=(PlanGroup("k", Col("crm", "note")),))),
    param("c3-dimension-in-measure",
          plan=hand_plan(measures=(COUNT, PlanMeasure("s", "sum", Col("visits", "exposed"),
                                                      "0", "1")))),
    param("c4-list-id-equals",
          plan=hand_plan(where=Call("eq", (Col("crm", "uid"), Lit(VICTIM))), release="list")),
    param("c4-list-private-predicate",
          plan=hand_plan(where=Call("eq", (Col("crm", "note"), Lit(CANARY))), release="list")),
    param("c4-list-to-non-owner", plan=hand_plan(where=seg_eq("a"), release="list"),
          recipients=("bob",)),
    param("c4-list-with-dp", plan=hand_plan(where=seg_eq("a"), release="list"),
          dp={"epsilon": "1"}),
    param("c4-list-full-join",
          plan=hand_plan(joins=(Join("visits", "full"),), release="list")),
]


@pytest.mark.parametrize("attack", WORKER_REFUSALS)
def test_worker_refuses_what_the_front_end_refuses(room: AttackRoom,
                                                   attack: dict[str, Any]) -> None:
    bundle = room.plan_bundle(**attack)
    with pytest.raises(QueryRejectedError):  # the SDK would have refused it at `bundle new`
        verify_bundle(bundle, room.manifest, room.manifest_digest, now=utcnow())
    worker_refuses(room, bundle)


# == 1. broadcast values: what the grammar keeps is per person ===================================


@pytest.mark.parametrize("attack", [
    param("c1-sql-other-partys-value-as-key",
          sql=f"SELECT v.segment AS s, COUNT(*) AS n, SUM(LEAST(GREATEST(c.spend, 0), 100)) AS "
              f"spend {J} GROUP BY 1"),
    param("c1-py-other-partys-value-as-key",
          python=P + 'plan = (query(c).join(v).group_by(s=v["segment"]).count("n")'
                     '.sum("spend", c["spend"], lower=0, upper=100).build())\n'),
])
def test_other_partys_value_as_key_is_per_person(room: AttackRoom, attack: dict[str, Any]) -> None:
    """Grouping by Bob's value puts each person in the cell of *their own* value: the victim's
    spend moves only the victim's cell, by at most the clamp."""
    base, high = across(room, new_bundle(room, **attack), "base", "spend_high")
    moves_within(base, high, ("s",), {"n": 0, "spend": SPEND_UPPER}, victim_cells=[("a",)])


@pytest.mark.parametrize("attack", [
    param("c1-sql-constant-key-through-matched",
          sql="SELECT CASE WHEN v.uid IS NULL THEN 'all' ELSE 'all' END AS k, COUNT(*) AS n, "
              "SUM(LEAST(GREATEST(c.spend, 0), 100)) AS spend "
              "FROM crm c LEFT JOIN visits v ON c.uid = v.uid GROUP BY 1"),
    param("c1-py-constant-key-through-matched",
          python=P + 'plan = (query(c).join(v, kind="left").group_by(k=when_(c.matched(), "all",'
                     ' "all")).count("n").sum("spend", c["spend"], lower=0, upper=100).build())\n'),
])
def test_a_constant_key_is_just_the_total(room: AttackRoom, attack: dict[str, Any]) -> None:
    """A key constant in effect (it reads only ``matched()``) puts everyone in one cell: the
    total, which the victim's spend moves by at most the clamp."""
    base, high = across(room, new_bundle(room, **attack), "base", "spend_high")
    assert [r[0] for r in base["rows"]] == ["all"]
    moves_within(base, high, ("k",), {"n": 0, "spend": SPEND_UPPER}, victim_cells=[("all",)])


def test_full_join_keys_stay_per_person(room: AttackRoom) -> None:
    """c1-sql-full-join-coalesce: a FULL join unit is one person on both sides; coalescing the
    other party's value does not spread it to anyone else."""
    sql = ("SELECT COALESCE(v.segment, 'none') AS s, COUNT(*) AS n "
           "FROM crm c FULL JOIN visits v ON c.uid = v.uid GROUP BY 1")
    base, high, moved = across(room, new_bundle(room, sql=sql), "base", "spend_high",
                               "segment_moved")
    assert base == high
    moves_within(base, moved, ("s",), {"n": 1}, victim_cells=[("a",)])


# == 2. invented units: the unit is always the platform's person =================================


@pytest.mark.parametrize("attack", [
    param("c2-sql-alias-non-id-as-unit",
          sql=f"SELECT v.segment AS uid, COUNT(*) AS n {J} GROUP BY 1"),
    param("c2-py-alias-non-id-as-unit",
          python=P + 'plan = query(c).join(v).group_by(uid=v["segment"]).count("n").build()\n'),
])
def test_alias_as_unit_is_just_a_group_name(room: AttackRoom, attack: dict[str, Any]) -> None:
    """Naming a dimension ``uid`` makes it a group key, not the unit: ``COUNT(*)`` still counts
    distinct persons (15 per segment), and 49 extra rows of the victim in either party's data
    count once."""
    base, crm_dup, visits_dup = across(room, new_bundle(room, **attack), "base", "crm_dup",
                                       "visits_dup")
    assert {r[0]: r[1] for r in base["rows"]} == {"a": 15, "b": 15}
    assert crm_dup == base
    moves_within(base, visits_dup, ("uid",), {"n": 1}, victim_cells=[("a",), ("b",)],
                 l1={"n": 2})


@pytest.mark.parametrize("attack", [
    param("c2-sql-is-null-tests-the-join",
          sql="SELECT COUNT(*) AS n FROM crm c LEFT JOIN visits v ON c.uid = v.uid "
              "WHERE v.uid IS NOT NULL"),
    param("c2-py-matched-tests-the-join",
          python=P + 'plan = query(c).join(v, kind="left").where(v.matched()).count("n")'
                     '.build()\n'),
])
def test_matched_reads_the_join_not_the_id(room: AttackRoom, attack: dict[str, Any]) -> None:
    base, high = across(room, new_bundle(room, **attack), "base", "spend_high")
    assert base["rows"] == [[N_CRM]] and base == high


# == 3. encoding: per-row keys, bounded duplicates ===============================================

DIM_KEY_SQL = (f"SELECT CASE WHEN v.segment = 'a' THEN 'x' ELSE 'y' END AS k, COUNT(*) AS n, "
               f"SUM(LEAST(GREATEST(c.spend, 0), 100)) AS spend {J} GROUP BY 1")
DIM_KEY_PY = P + ('plan = (query(c).join(v).group_by(domains={"k": ["x", "y"]}, '
                  'k=when_(v["segment"] == "a", "x", "y")).count("n")'
                  '.sum("spend", c["spend"], lower=0, upper=100).build())\n')


@pytest.mark.parametrize("attack", [
    param("c3-sql-dimension-case-key", sql=DIM_KEY_SQL, domains={"k": ("x", "y")}),
    param("c3-py-dimension-when-key", python=DIM_KEY_PY),
])
def test_dimension_keys_are_per_row(room: AttackRoom, attack: dict[str, Any]) -> None:
    """A key computed from dimensions is computed on each person's own row: changing the
    victim's segment moves one person from x to y, nobody else; changing the victim's spend
    moves only the sum of the victim's own cell."""
    base, moved, high = across(room, new_bundle(room, **attack), "base", "segment_moved",
                               "spend_high")
    moves_within(base, moved, ("k",), {"n": 1, "spend": SPEND_UPPER},
                 victim_cells=[("x",), ("y",)], l1={"n": 2, "spend": LOW_SPEND * 2})
    moves_within(base, high, ("k",), {"n": 0, "spend": SPEND_UPPER}, victim_cells=[("x",)])


BY_SEGMENT_SQL = (f"SELECT v.segment AS s, COUNT(*) AS n, "
                  f"SUM(LEAST(GREATEST(c.spend, 0), 100)) AS spend {J} GROUP BY 1")


@pytest.mark.parametrize("attack, k", [
    pytest.param({"sql": BY_SEGMENT_SQL}, 1, id="c3-sql-duplicate-rows-k1"),
    pytest.param({"sql": BY_SEGMENT_SQL, "max_contributions": 3}, 3, id="c3-sql-duplicate-rows-k3"),
    pytest.param({"python": P + 'plan = (query(c).join(v).group_by(s=v["segment"]).count("n")'
                                '.sum("spend", c["spend"], lower=0, upper=100)'
                                '.max_contributions(2).build())\n'}, 2,
                 id="c3-py-duplicate-rows-k2"),
])
def test_duplicate_rows_are_bounded(room: AttackRoom, attack: dict[str, Any], k: int) -> None:
    """49 extra rows of the victim (fake units carrying the maximum spend) in Alice's data, or
    49 extra rows with varying segments in Bob's: the victim still counts once, lands in at
    most k cells, and moves each sum by at most k times the clamp (not 49 times)."""
    base, crm_dup, visits_dup = across(room, new_bundle(room, **attack), "base", "crm_dup",
                                       "visits_dup")
    moves_within(base, crm_dup, ("s",), {"n": 0, "spend": k * SPEND_UPPER},
                 victim_cells=[("a",)])
    moves_within(base, visits_dup, ("s",), {"n": 1, "spend": k * SPEND_UPPER},
                 victim_cells=[("a",), ("b",)], l1={"n": k + 1})


# == 4. list mode =================================================================================


@pytest.mark.parametrize("attack", [
    param("c4-sql-tiny-list", sql=f"SELECT c.uid {J} WHERE v.exposed = 7"),
    param("c4-py-tiny-list",
          python=P + 'plan = query(c).join(v).where(v["exposed"] == 7).list_ids().build()\n'),
])
def test_tiny_list_is_withheld_whether_or_not_the_victim_matches(
        room: AttackRoom, attack: dict[str, Any]) -> None:
    """A predicate only the victim could pass: nobody passes in ``base``, exactly the victim in
    ``segment_moved``; both runs succeed and release the same empty, withheld list."""
    base, moved = across(room, new_bundle(room, **attack), "base", "segment_moved")
    assert base["rows"] == [] and base["meta"]["withheld"]
    assert moved == base
    assert VICTIM not in json.dumps(moved)


def test_a_list_does_not_depend_on_a_measure(room: AttackRoom) -> None:
    """c4-sql-list-by-dimension: a legitimate list (Alice's own ids in Bob's segment a) is the
    same whatever the victim's spend."""
    bundle = new_bundle(room, sql=f"SELECT c.uid {J} WHERE v.segment = 'a'")
    base, high = across(room, bundle, "base", "spend_high")
    assert len(base["rows"]) == 15 and base == high


# == 5. one bit per run: data-dependent errors do not decide the run =============================


@pytest.mark.parametrize("attack, worlds, bounds, own", [
    pytest.param({"sql": f"SELECT CAST(v.segment AS INT) AS k, COUNT(*) AS n {J} GROUP BY 1"},
                 ("base", "segment_moved"), {"n": 1}, [(None,)], id="c5-sql-cast-fails-on-victim"),
    pytest.param({"python": P + 'plan = query(c).join(v).group_by(k=v["segment"].to_int())'
                                '.count("n").build()\n'},
                 ("base", "segment_moved"), {"n": 1}, [(None,)], id="c5-py-cast-fails-on-victim"),
    pytest.param({"sql": f"SELECT v.segment AS s, COUNT(*) AS n, SUM(LEAST(GREATEST(1 / "
                         f"(c.spend - 10), 0), 1)) AS x {J} GROUP BY 1"},
                 ("base", "spend_high"), {"n": 0, "x": 1}, [("a",)],
                 id="c5-sql-division-by-zero-on-victim"),
    pytest.param({"python": P + 'plan = (query(c).join(v).group_by(s=v["segment"]).count("n")'
                                '.sum("x", c["spend"] / (c["spend"] - 10), lower=0, upper=1)'
                                '.build())\n'},
                 ("base", "spend_high"), {"n": 0, "x": 1}, [("a",)],
                 id="c5-py-division-by-zero-on-victim"),
    pytest.param({"sql": f"SELECT v.segment AS s, COUNT(*) AS n, SUM(LEAST(GREATEST("
                         f"CAST(c.spend AS BIGINT) * {BIG}, 0), 1)) AS x {J} GROUP BY 1"},
                 ("base", "spend_high"), {"n": 0, "x": 1}, [("a",)],
                 id="c5-sql-mul-overflow-in-measure"),
    pytest.param({"python": P + f'plan = (query(c).join(v).group_by(s=v["segment"]).count("n")'
                                f'.sum("x", c["spend"].to_int() * {BIG}, lower=0, upper=1)'
                                '.build())\n'},
                 ("base", "spend_high"), {"n": 0, "x": 1}, [("a",)],
                 id="c5-py-mul-overflow-in-measure"),
    pytest.param({"sql": f"SELECT CAST((v.exposed * {BIG}) * (v.exposed * 128) AS VARCHAR) AS k, "
                         f"COUNT(*) AS n {J} GROUP BY 1"},
                 ("base", "segment_moved"), {"n": 1}, [("0",), (None,)],
                 id="c5-sql-mul-overflow-in-key"),
    pytest.param({"python": P + f'plan = query(c).join(v).group_by(k=((v["exposed"] * {BIG}) * '
                                f'(v["exposed"] * 128)).to_text()).count("n").build()\n'},
                 ("base", "segment_moved"), {"n": 1}, [("0",), (None,)],
                 id="c5-py-mul-overflow-in-key"),
    pytest.param({"sql": f"SELECT v.segment AS s, COUNT(*) AS n {J} "
                         f"WHERE (v.exposed * {BIG}) * (v.exposed * 128) >= 0 GROUP BY 1"},
                 ("base", "segment_moved"), {"n": 1}, [("a",)], id="c5-sql-mul-overflow-in-where"),
    pytest.param({"python": P + f'plan = (query(c).join(v).where((v["exposed"] * {BIG}) * '
                                f'(v["exposed"] * 128) >= 0).group_by(s=v["segment"]).count("n")'
                                '.build())\n'},
                 ("base", "segment_moved"), {"n": 1}, [("a",)], id="c5-py-mul-overflow-in-where"),
])
def test_row_errors_do_not_decide_the_run(room: AttackRoom, attack: dict[str, Any],
                                          worlds: tuple[str, str], bounds: dict[str, float],
                                          own: list[tuple[Any, ...]]) -> None:
    """Errors that only the victim's value triggers become NULL for that row: both worlds
    succeed with the same status and error code (``across``), and the outputs move only in the
    victim's own cell, within the bound."""
    bundle = new_bundle(room, **attack)
    a, b = across(room, bundle, *worlds)
    groups = tuple(c for c in a["columns"] if c not in bounds)
    moves_within(a, b, groups, bounds, victim_cells=own)


def test_receipts_carry_no_data_dependent_detail(room: AttackRoom) -> None:
    """c5-receipt: the receipts of two worlds name no suppressed groups, carry whole seconds,
    and have the same shape."""
    bundle = new_bundle(room, sql=f"SELECT CAST(v.segment AS INT) AS k, COUNT(*) AS n {J} "
                                  "GROUP BY 1")
    receipts = [receipt_of(run(room, bundle, w)) for w in ("base", "segment_moved")]
    for r in receipts:
        assert r["status"] == "succeeded" and r["error_code"] is None
        assert "suppressed_groups" not in json.dumps(r)
        assert all(v % 1000 == 0 for v in r["timings_ms"].values())
    assert sorted(receipts[0]) == sorted(receipts[1])
    assert receipts[0]["privacy"] == receipts[1]["privacy"]


@pytest.mark.parametrize("attack", [
    param("c5-sql-text-measure-conversion-error",
          sql=f"SELECT COUNT(*) AS n, SUM(LEAST(GREATEST(CASE WHEN c.spend > 1000 THEN 'x' "
              f"ELSE '0' END, 0), 1)) AS bit {J}"),
    param("c5-py-text-measure-conversion-error",
          python=P + 'plan = (query(c).join(v).count("n").sum("bit", when_(c["spend"] > 1000, '
                     '"x", "0"), lower=0, upper=1).build())\n'),
])
def test_text_measure_does_not_decide_the_run(room: AttackRoom, attack: dict[str, Any]) -> None:
    """Every other person's spend is at most 40: the run fails iff the victim's spend is above
    1000. Should be neutralised (the same status in both worlds). Admission and the base run
    are preconditions (a refusal or a failing base run is an error here, not the hole)."""
    bundle = new_bundle(room, **attack)
    base = run(room, bundle, "base")
    if base["status"] != "succeeded":
        raise RuntimeError(f"precondition: the base run {base['status']} ({base['error_code']})")
    high = run(room, bundle, "spend_high")
    assert (high["status"], high["error_code"]) == ("succeeded", None)


# == 7. custom code needs allow_custom_code on every input =======================================

CUSTOM_SQL = "SELECT c.uid AS unit, c.note AS leak FROM crm c JOIN visits v USING (uid)"
CUSTOM_PY = (
    "def query(tables, params):\n"
    "    return tables['crm'].select('uid', 'note').rename_columns(['unit', 'leak'])\n"
)
CUSTOM_OUT = {"mode": "aggregate", "privacy_unit": "unit"}


@pytest.mark.parametrize("kind, code, inputs", [
    pytest.param("sql", CUSTOM_SQL, ("crm", "visits"), id="c7-sql-custom-code-both-closed"),
    pytest.param("python", CUSTOM_PY, ("crm", "visits"), id="c7-py-custom-code-both-closed"),
    pytest.param("sql", "SELECT uid AS unit FROM crm", ("crm",), id="c7-sql-custom-code-one-input"),
    pytest.param("python", CUSTOM_PY, ("crm",), id="c7-py-custom-code-one-input"),
    pytest.param("plan", CUSTOM_SQL, ("crm",), id="c7-kind-plan-without-a-plan"),
])
def test_custom_code_in_a_closed_room_is_refused(closed_room: AttackRoom, kind: str, code: str,
                                                 inputs: tuple[str, ...]) -> None:
    bundle = closed_room.bundle(code, CUSTOM_OUT, kind=kind, inputs=inputs)
    with pytest.raises(QueryRejectedError):
        verify_bundle(bundle, closed_room.manifest, closed_room.manifest_digest, now=utcnow())
    worker_refuses(closed_room, bundle)


@pytest.mark.parametrize("kind, code", [
    pytest.param("sql", CUSTOM_SQL, id="c7-sql-custom-code-reads-a-closed-input"),
    pytest.param("python", CUSTOM_PY, id="c7-py-custom-code-reads-a-closed-input"),
])
def test_custom_code_needs_every_inputs_owner(mixed_room: AttackRoom, kind: str,
                                              code: str) -> None:
    """Alice allows custom code on crm, Bob does not on visits: reading both is refused."""
    bundle = mixed_room.bundle(code, CUSTOM_OUT, kind=kind)
    with pytest.raises(QueryRejectedError):
        verify_bundle(bundle, mixed_room.manifest, mixed_room.manifest_digest, now=utcnow())
    worker_refuses(mixed_room, bundle)


def test_custom_code_over_open_inputs_only_is_admitted(mixed_room: AttackRoom) -> None:
    """The positive control: reading only crm, whose owner allowed it, runs (and says its
    privacy depends on code review)."""
    bundle = mixed_room.bundle("SELECT uid AS unit FROM crm", CUSTOM_OUT, inputs=("crm",))
    verify_bundle(bundle, mixed_room.manifest, mixed_room.manifest_digest, now=utcnow())
    doc = run(mixed_room, bundle)
    assert doc["status"] == "succeeded", doc["error_code"]
    assert receipt_of(doc)["privacy"]["guarantee"] == "depends on code review"


@pytest.mark.parametrize("kind, code", [
    pytest.param("python", CUSTOM_PY, id="c7-py-custom-code-smuggled-into-a-plan-bundle"),
])
def test_custom_code_beside_a_plan_is_never_run(closed_room: AttackRoom, kind: str,
                                                code: str) -> None:
    """A Python plan bundle's ``code`` is the author's builder; the worker runs the plan, never
    the code, so custom code put there (reading the private note) does nothing."""
    plan = plan_from_sql(f"SELECT v.segment AS s, COUNT(*) AS n {J} GROUP BY 1",
                         plan_columns(closed_room.manifest))
    bundle = closed_room.plan_bundle(plan, kind=kind, code=code)
    verify_bundle(bundle, closed_room.manifest, closed_room.manifest_digest, now=utcnow())
    base, high = across(closed_room, bundle, "base", "spend_high")
    assert base["columns"] == ["s", "n"] and base == high
    assert base["meta"]["guarantee"] == "by construction"



# == the measured match rate (issue 10): the platform's, never the query's ========================


def test_the_match_rate_depends_on_neither_the_query_nor_a_value(room: AttackRoom) -> None:
    """Every join's receipt carries each input's match rate. It counts persons (distinct ids)
    in the inputs, before any predicate or bounding: hostile bundles of every shape, over worlds
    that differ only in the victim's values or duplicate rows, all report the same rates."""
    bundles = [
        new_bundle(room, sql="SELECT CASE WHEN v.uid IS NULL THEN 'all' ELSE 'all' END AS k, "
                             "COUNT(*) AS n FROM crm c LEFT JOIN visits v ON c.uid = v.uid "
                             "GROUP BY 1"),
        new_bundle(room, python=P + 'plan = query(c).join(v).group_by(k=v["segment"].to_int())'
                                    '.count("n").build()\n'),
        new_bundle(room, sql="SELECT v.segment AS s, COUNT(*) AS n FROM crm c FULL JOIN visits v "
                             "ON c.uid = v.uid GROUP BY 1", max_contributions=3),
    ]
    seen = set()
    for bundle in bundles:
        for world in ("base", "spend_high", "segment_moved", "crm_dup", "visits_dup"):
            doc = run(room, bundle, world)
            assert doc["status"] == "succeeded", (world, doc["error_code"])
            match = receipt_of(doc)["match"]
            assert [m["dataset"] for m in match] == ["crm", "visits"]
            seen.add(json.dumps(match, sort_keys=True))
    assert len(seen) == 1, seen
