"""The database: an engine, sessions, and one writer at a time.

SQLite (the default) runs in WAL mode with ``synchronous=FULL`` so a committed transaction
survives a crash; transactions begin explicitly (``BEGIN IMMEDIATE`` for writers) and a
process-wide lock keeps to one writer, so readers never block and writers never deadlock.
PostgreSQL URLs work too (``postgresql+psycopg://...``); there the row locks taken with
``with_for_update`` do the serializing.

Every committed write through a :class:`Database` bumps its :attr:`~Database.generation`;
:class:`StateCache` keeps values derived from the database until the next write (or a short
maximum age, for writes made by anyone else), so a read route serves them without querying.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import Engine, create_engine, delete, event, select
from sqlalchemy.orm import Session, sessionmaker

from coordinator.storage.models import Base, PendingManifest, PendingParty, Room, RoomParty
from sdk.protocol import clock
from sdk.protocol.dsse import Envelope
from sdk.protocol.keys import keyid

V = TypeVar("V")
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER")
_WROTE = "sealroom.wrote"
#: connections kept open per SQLite database: as many as threads that may read at once
#: (the request thread pool has 40), so that a busy coordinator does not open and close them
SQLITE_POOL = 40
#: how long a manifest left half-signed by a coordinator of before pending manifests stays
LEGACY_PENDING_TTL = timedelta(days=7)


def utcnow() -> datetime:
    """The current time, UTC, without tzinfo (how every timestamp is stored)."""
    return clock.utcnow().replace(tzinfo=None)


def _normalise_url(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class Database:
    """An engine plus session helpers: :meth:`read` and :meth:`write` transactions."""

    def __init__(self, url: str) -> None:
        self.url = _normalise_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        self._write_lock = threading.RLock()
        #: bumped after every write transaction through this object (see :class:`StateCache`)
        self.generation = 0
        kwargs: dict[str, Any] = {"future": True}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            if ":memory:" not in self.url and "mode=memory" not in self.url:
                kwargs.update(pool_size=SQLITE_POOL, max_overflow=SQLITE_POOL)
        else:
            kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=20)
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.is_sqlite:
            self._configure_sqlite()
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

        @event.listens_for(self.engine, "before_cursor_execute")
        def _note_writes(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if statement.lstrip()[:7].upper().startswith(_WRITES):
                conn.info[_WROTE] = True

    def _configure_sqlite(self) -> None:
        @event.listens_for(self.engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(self.engine, "begin")
        def _begin(conn: Any) -> None:
            mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

    def create_all(self) -> None:
        """Create missing tables and migrate older data (idempotent)."""
        with self._write_lock:
            Base.metadata.create_all(self.engine)
            self._migrate_incomplete_rooms()

    def _migrate_incomplete_rooms(self) -> None:
        """Rooms stored before pending manifests existed but not signed by every party become
        pending manifests (they never reserved their id; no upload, bundle or run could use
        them). Their stored envelopes hold only signatures verified on arrival."""
        with self.write() as s:
            rows = list(s.scalars(select(Room).where(Room.complete.is_(False))))
            for row in rows:
                parties = list(s.scalars(select(RoomParty).where(RoomParty.room_id == row.room_id)))
                signers = {sig.keyid for sig in Envelope.from_json(
                    row.envelope.encode("utf-8"), max_bytes=64 * 1024 * 1024).signatures}
                if s.get(PendingManifest, row.manifest_digest) is None:
                    submitter = next((p.signing_key for p in parties if p.name == row.submitter),
                                     parties[0].signing_key if parties else "")
                    s.add(PendingManifest(
                        digest=row.manifest_digest, room_id=row.room_id, envelope=row.envelope,
                        submitter_key=submitter, created_at=row.created_at,
                        updated_at=row.updated_at, expires_at=utcnow() + LEGACY_PENDING_TTL))
                    s.flush()
                    for p in parties:
                        s.add(PendingParty(
                            digest=row.manifest_digest, name=p.name, signing_key=p.signing_key,
                            signed=keyid(bytes.fromhex(p.signing_key)) in signers))
                s.execute(delete(RoomParty).where(RoomParty.room_id == row.room_id))
                s.delete(row)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read transaction; closing the session ends it (loaded objects stay usable)."""
        with self._sessions() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction: committed when the block ends normally, else rolled back.

        Only one write transaction runs at a time in this process.
        """
        with self._write_lock, self._sessions() as session:
            options = {"sqlite_begin": "IMMEDIATE"} if self.is_sqlite else {}
            info = session.connection(execution_options=options).info
            info[_WROTE] = False
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
            finally:
                # under the write lock, once the commit is visible; a transaction that only
                # read (the run queue's polls) leaves what was derived before valid
                if info.pop(_WROTE, True):
                    self.generation += 1

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


class StateCache(Generic[V]):
    """Values derived from a database, each reused until the next write through it.

    A value is computed (:meth:`get`) under the :attr:`Database.generation` read *before* its
    queries, so a write that lands meanwhile makes it stale at once (and a value computed
    before the latest write is not kept at all). Writes made by another process (or by hand)
    are seen after ``max_age`` seconds at the latest; ``max_age=0`` turns the cache off. At
    most ``max_items`` values, weighing ``max_weight`` in all (``weigh``, 1 each by default),
    are kept: the least recently used go, and a value heavier than a sixteenth of the budget
    is not kept. Thread-safe; values must not be mutated by callers.
    """

    def __init__(self, db: Database, max_age: float, max_items: int = 4096,
                 clock_s: Callable[[], float] = time.monotonic,
                 weigh: Callable[[V], int] | None = None, max_weight: int | None = None) -> None:
        self.db, self.max_age, self.max_items = db, max_age, max_items
        self._clock = clock_s
        self._weigh = weigh or (lambda _value: 1)
        self.max_weight = max_items if max_weight is None else max_weight
        self._items: OrderedDict[Hashable, tuple[int, float, V, int]] = OrderedDict()
        self._weight = 0
        self._generation = -1
        self._lock = threading.Lock()

    def mark(self) -> tuple[int, float]:
        """(generation, time) to :meth:`put` a value under: take it *before* its queries."""
        return self.db.generation, self._clock()

    def peek(self, key: Hashable) -> V | None:
        """The value of ``key`` if it is fresh (no write since, younger than ``max_age``)."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            generation, stamp, value, _ = item
            if generation != self.db.generation or self._clock() - stamp > self.max_age:
                return None
            self._items.move_to_end(key)
            return value

    def get(self, key: Hashable, compute: Callable[[], V]) -> V:
        """The fresh value of ``key``, computed (outside the lock) when there is none."""
        value = self.peek(key)
        if value is not None:
            return value
        generation, stamp = self.mark()
        value = compute()
        self.put(key, value, generation, stamp)
        return value

    def put(self, key: Hashable, value: V, generation: int, stamp: float) -> None:
        """Keep ``value``, computed from what the database held at ``generation``."""
        weight = self._weigh(value)
        if self.max_age <= 0 or generation != self.db.generation \
                or weight * 16 > self.max_weight:
            return
        with self._lock:
            if generation != self._generation:  # everything kept before is stale now
                self._items.clear()
                self._weight, self._generation = 0, generation
            old = self._items.pop(key, None)
            if old is not None:
                self._weight -= old[3]
            self._items[key] = (generation, stamp, value, weight)
            self._weight += weight
            while len(self._items) > self.max_items or self._weight > self.max_weight:
                self._weight -= self._items.popitem(last=False)[1][3]

    def forget(self, key: Hashable) -> None:
        """Drop the value of ``key``."""
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._weight -= old[3]
