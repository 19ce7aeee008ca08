"""The coordinator's tables (SQLAlchemy 2 declarative models).

Signed objects are stored as the canonical JSON of their envelopes (``Text``), exactly as they
were verified; sealed bytes live in the blob store and are referred to by SHA-256.

Every ``String(n)`` column is a cap, not only a hint to the database: a longer value set on a
row raises ``InputError`` (400) before anything is written (:func:`_cap_strings`), whatever
the database would do with it (SQLite stores it, PostgreSQL fails the transaction).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sdk.errors import InputError

HEX = 64


class Base(DeclarativeBase):
    """Declarative base of the coordinator's schema."""


class Room(Base):
    """A room: its manifest envelope with every valid party signature received so far."""

    __tablename__ = "rooms"
    room_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    manifest_digest: Mapped[str] = mapped_column(String(HEX))
    envelope: Mapped[str] = mapped_column(Text)
    complete: Mapped[bool] = mapped_column(Boolean, default=False)
    submitter: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime())
    updated_at: Mapped[datetime] = mapped_column(DateTime())


class RoomParty(Base):
    """Who may see a room: each party's name and raw signing key (hex)."""

    __tablename__ = "room_parties"
    room_id: Mapped[str] = mapped_column(ForeignKey("rooms.room_id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    signing_key: Mapped[str] = mapped_column(String(HEX), index=True)


class PendingManifest(Base):
    """A manifest not yet signed by every party it lists: an invitation, not a room.

    Any number may exist for one room id (keyed by manifest digest); none reserves the id,
    and each expires (``expires_at``). The first one every listed party signs becomes the
    room, and the others for its id are dropped.
    """

    __tablename__ = "pending_manifests"
    digest: Mapped[str] = mapped_column(String(HEX), primary_key=True)
    room_id: Mapped[str] = mapped_column(String(64), index=True)
    envelope: Mapped[str] = mapped_column(Text)
    submitter_key: Mapped[str] = mapped_column(String(HEX), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime())
    updated_at: Mapped[datetime] = mapped_column(DateTime())
    expires_at: Mapped[datetime] = mapped_column(DateTime(), index=True)


class PendingParty(Base):
    """Who a pending manifest invites (each listed party's name and signing key) and whether
    that party's signature has been received (verified when it was merged)."""

    __tablename__ = "pending_parties"
    digest: Mapped[str] = mapped_column(ForeignKey("pending_manifests.digest"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    signing_key: Mapped[str] = mapped_column(String(HEX), index=True)
    signed: Mapped[bool] = mapped_column(Boolean, default=False)


class Challenge(Base):
    """A single-use authentication nonce handed to a signing key."""

    __tablename__ = "auth_challenges"
    nonce: Mapped[str] = mapped_column(String(HEX), primary_key=True)
    signing_key: Mapped[str] = mapped_column(String(HEX))
    audience: Mapped[str] = mapped_column(String(400))
    expires_at: Mapped[datetime] = mapped_column(DateTime())


class Token(Base):
    """A bearer token (stored as its SHA-256) bound to a signing key, with an expiry."""

    __tablename__ = "auth_tokens"
    token_hash: Mapped[str] = mapped_column(String(HEX), primary_key=True)
    signing_key: Mapped[str] = mapped_column(String(HEX))
    expires_at: Mapped[datetime] = mapped_column(DateTime(), index=True)


class Worker(Base):
    """A provisioned worker: its published attestation and its sealed key (opaque here)."""

    __tablename__ = "workers"
    attestation_digest: Mapped[str] = mapped_column(String(HEX), primary_key=True)
    attestation: Mapped[str] = mapped_column(Text)
    sealed_key: Mapped[bytes] = mapped_column(LargeBinary)
    image_id: Mapped[str] = mapped_column(String(200))
    isolation: Mapped[str] = mapped_column(String(16))
    current: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime())


class UploadRow(Base):
    """A signed upload statement and whether its ciphertext has arrived."""

    __tablename__ = "uploads"
    digest: Mapped[str] = mapped_column(String(HEX), primary_key=True)
    room_id: Mapped[str] = mapped_column(ForeignKey("rooms.room_id"), index=True)
    dataset: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    owner: Mapped[str] = mapped_column(String(64))
    ciphertext_digest: Mapped[str] = mapped_column(String(HEX))
    ciphertext_size: Mapped[int] = mapped_column(BigInteger)
    envelope: Mapped[str] = mapped_column(Text)
    complete: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime())
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    __table_args__ = (UniqueConstraint("room_id", "dataset", "version"),)


class BundleRow(Base):
    """A submitted query bundle."""

    __tablename__ = "bundles"
    digest: Mapped[str] = mapped_column(String(HEX), primary_key=True)
    room_id: Mapped[str] = mapped_column(ForeignKey("rooms.room_id"), index=True)
    author: Mapped[str] = mapped_column(String(64))
    sequence: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(200))
    envelope: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime())


class ApprovalRow(Base):
    """A party's approval or revocation of one bundle."""

    __tablename__ = "approvals"
    digest: Mapped[str] = mapped_column(String(HEX), primary_key=True)
    room_id: Mapped[str] = mapped_column(ForeignKey("rooms.room_id"))
    bundle_digest: Mapped[str] = mapped_column(String(HEX), index=True)
    party: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(16))
    issued_at: Mapped[str] = mapped_column(String(32))
    expires: Mapped[str] = mapped_column(String(32))
    envelope: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime())


class RunRow(Base):
    """A run: queued → running → exactly one of succeeded, refused, failed."""

    __tablename__ = "runs"
    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    room_id: Mapped[str] = mapped_column(ForeignKey("rooms.room_id"))
    bundle_digest: Mapped[str] = mapped_column(String(HEX))
    requested_by: Mapped[str] = mapped_column(String(64))
    requester_key: Mapped[str] = mapped_column(String(HEX))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    error_code: Mapped[str | None] = mapped_column(String(32), nullable=True)
    message: Mapped[str] = mapped_column(String(500), default="")
    receipt: Mapped[str | None] = mapped_column(Text, nullable=True)
    log_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    recipients: Mapped[str] = mapped_column(String(2000), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    __table_args__ = (
        UniqueConstraint("room_id", "requester_key", "idempotency_key"),
        Index("ix_runs_room_state", "room_id", "state"),
    )


class OutputRow(Base):
    """A sealed output of a run for one recipient (bytes in the blob store)."""

    __tablename__ = "outputs"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), primary_key=True)
    recipient: Mapped[str] = mapped_column(String(64), primary_key=True)
    ciphertext_digest: Mapped[str] = mapped_column(String(HEX))
    size: Mapped[int] = mapped_column(BigInteger)


class LogEntryRow(Base):
    """One worker-signed entry of a room's log; ``(room_id, idx)`` is the append CAS."""

    __tablename__ = "log_entries"
    room_id: Mapped[str] = mapped_column(ForeignKey("rooms.room_id"), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    run_id: Mapped[str] = mapped_column(String(64))
    leaf_hash: Mapped[str] = mapped_column(String(HEX))
    envelope: Mapped[str] = mapped_column(Text)


class CheckpointRow(Base):
    """A worker-signed checkpoint of a room's log."""

    __tablename__ = "checkpoints"
    room_id: Mapped[str] = mapped_column(ForeignKey("rooms.room_id"), primary_key=True)
    tree_size: Mapped[int] = mapped_column(Integer, primary_key=True)
    root_hash: Mapped[str] = mapped_column(String(HEX))
    envelope: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime())


class MatchRateRow(Base):
    """One input's measured match rate, as a succeeded run's worker-signed receipt states it
    (``rate`` None: withheld below the minimum group size). ``partners`` are the other inputs'
    owners, sorted and comma-separated: the party pair the rate describes."""

    __tablename__ = "match_rates"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), primary_key=True)
    dataset: Mapped[str] = mapped_column(String(64), primary_key=True)
    room_id: Mapped[str] = mapped_column(String(64), index=True)
    party: Mapped[str] = mapped_column(String(64))
    partners: Mapped[str] = mapped_column(String(1100))
    rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime())


class Feedback(Base):
    """A recipient's word on a run's output: did it change a decision (output utility)."""

    __tablename__ = "feedback"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), primary_key=True)
    party: Mapped[str] = mapped_column(String(64), primary_key=True)
    room_id: Mapped[str] = mapped_column(String(64), index=True)
    changed_decision: Mapped[bool] = mapped_column(Boolean)
    note: Mapped[str] = mapped_column(String(2000), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime())



class PreviewSession(Base):
    """A match preview (ECDH PSI cardinality) between two parties' datasets, before any
    upload: the coordinator relays their opaque messages (:class:`PreviewMessage`) and keeps
    their signed ``match_preview`` statements. ``state``: ``waiting`` (for the partner),
    ``running``, ``done`` (both statements in; messages deleted), ``aborted`` or ``expired``
    (messages deleted). ``pair`` is the two party names, sorted, comma-separated (the daily
    limit's key); ``waiting_key`` is set only while waiting, so that one pair of datasets has
    at most one waiting session (a unique column: concurrent opens meet in one row)."""

    __tablename__ = "preview_sessions"
    session_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    room_id: Mapped[str] = mapped_column(ForeignKey("rooms.room_id"), index=True)
    pair: Mapped[str] = mapped_column(String(130))
    waiting_key: Mapped[str | None] = mapped_column(String(400), nullable=True, unique=True)
    opener: Mapped[str] = mapped_column(String(64))
    opener_dataset: Mapped[str] = mapped_column(String(64))
    opener_size: Mapped[int] = mapped_column(BigInteger)
    joiner: Mapped[str] = mapped_column(String(64))
    joiner_dataset: Mapped[str] = mapped_column(String(64))
    joiner_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    opener_statement: Mapped[str | None] = mapped_column(Text, nullable=True)
    joiner_statement: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime())
    updated_at: Mapped[datetime] = mapped_column(DateTime())
    expires_at: Mapped[datetime] = mapped_column(DateTime())
    __table_args__ = (Index("ix_preview_sessions_pair", "room_id", "pair", "created_at"),)


class PreviewMessage(Base):
    """One piece of one opaque preview message a session's party sent (bytes in the previews
    folder of the data directory, one file per piece, deleted with the session's messages)."""

    __tablename__ = "preview_messages"
    session_id: Mapped[str] = mapped_column(ForeignKey("preview_sessions.session_id"),
                                            primary_key=True)
    sender: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    piece: Mapped[int] = mapped_column(Integer, primary_key=True)
    pieces: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(BigInteger)
    digest: Mapped[str] = mapped_column(String(HEX))
    created_at: Mapped[datetime] = mapped_column(DateTime())

def _capped(where: str, length: int) -> Any:
    def check(_target: object, value: object, _old: object, _initiator: object) -> object:
        if isinstance(value, str) and len(value) > length:
            raise InputError(f"{where}: longer than {length} characters")
        return value

    return check


def _cap_strings() -> None:
    """Refuse, when it is set, a value longer than its ``String(n)`` column (``Text`` has no
    length: the envelopes it holds are capped by the body and envelope parsers)."""
    for mapper in Base.registry.mappers:
        for column in mapper.columns:
            length = getattr(column.type, "length", None)
            if isinstance(column.type, String) and isinstance(length, int):
                attribute = getattr(mapper.class_, column.key)
                event.listen(attribute, "set", _capped(f"{column.table.name}.{column.key}", length),
                             retval=True)


_cap_strings()
