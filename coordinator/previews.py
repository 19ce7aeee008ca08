"""Match previews: the coordinator relays the opaque messages of an ECDH PSI-cardinality run
between two parties (:mod:`sdk.protocol.psi`) and keeps their signed ``match_preview``
statements (:mod:`sdk.protocol.matchpreview`). It never sees an identifier or a count it could
check: it only holds the parties to the shape of a session.

A session is for one pair of datasets of two parties of an active room. The first party to
ask *opens* it (``waiting``), declaring the size of its set; its partner, asking for the same
pair, *joins* it (``running``). A declared size below the pair's minimum group size is refused
(``E_PRIVACY``, nothing stored). Each party then sends its messages — names, counts and byte
caps follow from the two declared sizes (:func:`sdk.protocol.psi.message_cap`) — in pieces of
at most :func:`piece_bytes` (the body cap of every route but the upload's), each written to its
own file under ``<data_dir>/previews/<session>/``; only the two parties of the session read or
write them, a message is readable once all its pieces are in, and a piece is written once (the
same bytes again are a no-op, other bytes a conflict). Each party then posts its statement,
verified against the manifest (signed by that party's key) and the session (datasets, sizes);
once both are in the session is ``done`` and every message is deleted. A party may abort a
session (``aborted``); a session not done within :data:`PREVIEW_TTL` expires. Aborted and
expired sessions lose their messages too.

Opening a session for a pair of parties counts against
``Settings.previews_per_pair_per_day`` (429 beyond): PSI cardinality over crafted sets can tell
whether one person is in the partner's set, and a limit bounds how many such questions a pair
of parties can ask a day.

Who may see what: a caller that is not a party of the room gets the room's one answer
(:data:`coordinator.rooms.NOT_A_PARTY`); a party of the room that is not one of the session's
two gets ``404`` whether or not the session exists. The operator may list sessions.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from coordinator.context import Caller, Services
from coordinator.errors import Forbidden
from coordinator.rooms import active_room, envelope_text, require_party, room_party
from coordinator.storage.db import utcnow
from coordinator.storage.models import PreviewMessage, PreviewSession
from sdk.errors import ConflictError, InputError, NotFoundError, ResourceError
from sdk.protocol.dsse import Envelope
from sdk.protocol.matchpreview import pair_datasets, preview_min_group_size, verify_match_preview
from sdk.protocol.psi import check_set_size, message_cap

PREVIEW_TTL = timedelta(hours=6)
ACTIVE = ("waiting", "running")
MAX_PIECE_BYTES = 8 * 1024 * 1024
MAX_LISTED = 200
DAY = timedelta(days=1)
NO_SESSION = "no such preview session of yours in this room"


class TooManyPreviews(ResourceError):
    """The pair of parties has opened as many previews as it may today (HTTP 429)."""

    status = 429


def piece_bytes(services: Services) -> int:
    """The size of every piece of a message but its last (a body the middleware accepts)."""
    return min(MAX_PIECE_BYTES, services.settings.max_json_bytes)


def _root(services: Services) -> Path:
    return services.settings.data_dir / "previews"


def _dir(services: Services, session_id: str) -> Path:
    return _root(services) / session_id


def _remove(services: Services, session_ids: list[str]) -> None:
    for session_id in session_ids:
        shutil.rmtree(_dir(services, session_id), ignore_errors=True)


@dataclass(frozen=True)
class Side:
    """One party of a session: its name, dataset and declared set size (None: not joined)."""

    party: str
    dataset: str
    size: int | None


@dataclass
class PreviewView:
    """A session as its parties see it."""

    row: PreviewSession
    messages: dict[str, list[str]] = field(default_factory=dict)

    @property
    def sides(self) -> tuple[Side, Side]:
        r = self.row
        return (Side(r.opener, r.opener_dataset, r.opener_size),
                Side(r.joiner, r.joiner_dataset, r.joiner_size))

    def side(self, party: str) -> tuple[Side, Side]:
        """(this party's side, the partner's side). Raises ``NotFoundError`` for another."""
        first, second = self.sides
        if party == first.party:
            return first, second
        if party == second.party:
            return second, first
        raise NotFoundError(NO_SESSION)

    @property
    def statements(self) -> list[str]:
        return [s for s in (self.row.opener_statement, self.row.joiner_statement) if s]


def _pair(a: str, b: str) -> str:
    return ",".join(sorted((a, b)))


def _waiting_key(room_id: str, party: str, dataset: str, partner: str, partner_dataset: str
                 ) -> str:
    ends = sorted([f"{party}:{dataset}", f"{partner}:{partner_dataset}"])
    return f"{room_id}/{ends[0]}/{ends[1]}"


def _complete(s: Session, session_id: str) -> dict[str, list[str]]:
    """Sender → names of its messages whose every piece is in."""
    rows = s.execute(select(PreviewMessage.sender, PreviewMessage.name, PreviewMessage.pieces,
                            func.count()).where(PreviewMessage.session_id == session_id)
                     .group_by(PreviewMessage.sender, PreviewMessage.name,
                               PreviewMessage.pieces)).all()
    out: dict[str, list[str]] = {}
    for sender, name, pieces, present in rows:
        if present == pieces:
            out.setdefault(sender, []).append(name)
    for names in out.values():
        names.sort()
    return out


def _end(s: Session, row: PreviewSession, state: str, now: datetime) -> None:
    """Move a session to a final state and delete its message rows (files: after commit)."""
    row.state = state
    row.waiting_key = None
    row.updated_at = now
    s.execute(delete(PreviewMessage).where(PreviewMessage.session_id == row.session_id))


def purge(services: Services) -> None:
    """Expire sessions past their time and remove the files of sessions no longer active
    (a crash between a commit and the removal leaves files behind; they go here)."""
    now = utcnow()
    with services.db.write() as s:
        for row in s.scalars(select(PreviewSession).where(
                PreviewSession.state.in_(ACTIVE), PreviewSession.expires_at <= now)):
            _end(s, row, "expired", now)
        active = set(s.scalars(select(PreviewSession.session_id).where(
            PreviewSession.state.in_(ACTIVE))))
    root = _root(services)
    if root.is_dir():
        _remove(services, [p.name for p in root.iterdir() if p.name not in active])


def open_preview(services: Services, room_id: str, caller: Caller, dataset: str, partner: str,
                 partner_dataset: str, size: int) -> tuple[PreviewView, bool]:
    """Open a session for the caller's ``dataset`` and ``partner``'s ``partner_dataset``, or
    join the one the partner opened for that pair; returns it and whether it is new.

    Opening again a pair the caller is waiting on updates its size; opening a pair whose
    session is running (a party started over) aborts that session first.

    Raises:
        Forbidden: not a party of the room.
        InputError, SignatureError: datasets that are not the two parties' or not of one id
            kind (:func:`sdk.protocol.matchpreview.pair_datasets`).
        PrivacyError: ``size`` below the pair's minimum group size (nothing is stored).
        TooManyPreviews: the pair has opened ``previews_per_pair_per_day`` sessions today.
    """
    party = require_party(services, room_id, caller)
    view = active_room(services, room_id)
    pair_datasets(view.manifest, party, dataset, partner, partner_dataset)
    minimum = preview_min_group_size(view.manifest, dataset, partner_dataset)
    check_set_size(size, minimum, "your")
    purge(services)
    key = _waiting_key(room_id, party, dataset, partner, partner_dataset)
    for _attempt in range(3):
        aborted: list[str] = []
        try:
            with services.db.write() as s:
                row, created = _open(services, s, room_id, key, party, dataset, partner,
                                     partner_dataset, size, aborted)
                messages = _complete(s, row.session_id)
        except IntegrityError:  # a concurrent open of the same pair: meet in its row
            continue
        _remove(services, aborted)
        return PreviewView(row, messages), created
    raise ConflictError("match preview: concurrent opens of this pair; try again")


def _open(services: Services, s: Session, room_id: str, key: str, party: str, dataset: str,
          partner: str, partner_dataset: str, size: int, aborted: list[str]
          ) -> tuple[PreviewSession, bool]:
    now = utcnow()
    waiting = s.scalar(select(PreviewSession).where(PreviewSession.waiting_key == key)
                       .with_for_update())
    if waiting is not None:
        if waiting.opener == party:
            waiting.opener_size, waiting.updated_at = size, now
        else:
            waiting.joiner_size, waiting.state, waiting.waiting_key = size, "running", None
            waiting.updated_at, waiting.expires_at = now, now + PREVIEW_TTL
        s.flush()
        return waiting, False
    ends = {(party, dataset), (partner, partner_dataset)}
    for row in s.scalars(select(PreviewSession).where(
            PreviewSession.room_id == room_id, PreviewSession.pair == _pair(party, partner),
            PreviewSession.state == "running").with_for_update()):
        if {(row.opener, row.opener_dataset), (row.joiner, row.joiner_dataset)} == ends:
            _end(s, row, "aborted", now)
            aborted.append(row.session_id)
    opened = s.scalar(select(func.count()).select_from(PreviewSession).where(
        PreviewSession.room_id == room_id, PreviewSession.pair == _pair(party, partner),
        PreviewSession.created_at > now - DAY)) or 0
    limit = services.settings.previews_per_pair_per_day
    if opened >= limit:
        raise TooManyPreviews(f"match preview: {party} and {partner} have opened {opened} "
                              f"previews in the last 24 hours, the most allowed ({limit})")
    row = PreviewSession(
        session_id=secrets.token_hex(16), room_id=room_id, pair=_pair(party, partner),
        waiting_key=key, opener=party, opener_dataset=dataset, opener_size=size,
        joiner=partner, joiner_dataset=partner_dataset, joiner_size=None, state="waiting",
        opener_statement=None, joiner_statement=None, created_at=now, updated_at=now,
        expires_at=now + PREVIEW_TTL)
    s.add(row)
    s.flush()
    return row, True


def _mine(services: Services, room_id: str, caller: Caller, session_id: str) -> tuple[str, str]:
    """(the caller's party name, the session id) when the caller is one of its parties."""
    party = require_party(services, room_id, caller)
    with services.db.read() as s:
        row = s.get(PreviewSession, session_id)
    if row is None or row.room_id != room_id or party not in (row.opener, row.joiner):
        raise NotFoundError(NO_SESSION)
    return party, session_id


def get_preview(services: Services, room_id: str, caller: Caller, session_id: str
                ) -> PreviewView:
    """A session of the caller's, with the names of the complete messages of each party."""
    _, session_id = _mine(services, room_id, caller, session_id)
    with services.db.read() as s:
        row = s.get(PreviewSession, session_id)
        if row is None:
            raise NotFoundError(NO_SESSION)
        return PreviewView(row, _complete(s, session_id))


def list_previews(services: Services, room_id: str, caller: Caller) -> list[PreviewView]:
    """The caller's sessions in the room (every session for the operator), newest first."""
    party = room_party(services, room_id, caller)
    purge(services)
    query = select(PreviewSession).where(PreviewSession.room_id == room_id)
    if party is not None:
        query = query.where((PreviewSession.opener == party) | (PreviewSession.joiner == party))
    with services.db.read() as s:
        rows = list(s.scalars(query.order_by(PreviewSession.created_at.desc(),
                                             PreviewSession.session_id).limit(MAX_LISTED)))
        return [PreviewView(r, _complete(s, r.session_id)) for r in rows]


def abort_preview(services: Services, room_id: str, caller: Caller, session_id: str
                  ) -> PreviewView:
    """End a waiting or running session of the caller's (its messages are deleted); a
    session already over is returned as it is."""
    _, session_id = _mine(services, room_id, caller, session_id)
    with services.db.write() as s:
        row = s.get(PreviewSession, session_id, with_for_update=True)
        if row is None:
            raise NotFoundError(NO_SESSION)
        if row.state in ACTIVE:
            _end(s, row, "aborted", utcnow())
    _remove(services, [session_id])
    return PreviewView(row)


def _running(s: Session, session_id: str) -> PreviewSession:
    row = s.get(PreviewSession, session_id, with_for_update=True)
    if row is None:
        raise NotFoundError(NO_SESSION)
    if row.state == "waiting":
        raise ConflictError("match preview: the partner has not joined this session yet")
    if row.state != "running":
        raise ConflictError(f"match preview: this session is {row.state}")
    return row


def put_piece(services: Services, room_id: str, caller: Caller, session_id: str, name: str,
              piece: int, pieces: int, data: bytes) -> PreviewMessage:
    """Store piece ``piece`` of ``pieces`` of the caller's message ``name`` (retry-safe).

    Raises ``InputError`` for a name the sizes do not allow, a piece out of shape or beyond
    the message's cap; ``ConflictError`` when the session is not running or the piece was
    stored with other bytes.
    """
    party, session_id = _mine(services, room_id, caller, session_id)
    view = get_preview(services, room_id, caller, session_id)
    mine, theirs = view.side(party)
    if mine.size is None or theirs.size is None:
        raise ConflictError("match preview: the partner has not joined this session yet")
    cap = min(message_cap(name, mine.size, theirs.size), services.settings.max_upload_bytes)
    unit = piece_bytes(services)
    if not 0 <= piece < pieces or (pieces - 1) * unit >= cap or not data \
            or len(data) > unit or (piece < pieces - 1 and len(data) != unit) \
            or piece * unit + len(data) > cap:
        raise InputError(f"match preview: piece {piece} of {pieces} ({len(data)} bytes) does "
                         f"not fit message {name} (cap {cap} bytes, pieces of {unit})")
    digest = hashlib.sha256(data).hexdigest()
    folder = _dir(services, session_id)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    final = folder / f"{party}.{name}.{piece}"
    tmp = folder / f".tmp-{secrets.token_hex(8)}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        with services.db.write() as s:
            _running(s, session_id)
            existing = s.get(PreviewMessage, (session_id, party, name, piece))
            if existing is not None:
                if existing.digest != digest or existing.pieces != pieces:
                    raise ConflictError(f"match preview: piece {piece} of {name} was sent "
                                        "before with other bytes")
                return existing
            other = s.scalar(select(PreviewMessage.pieces).where(
                PreviewMessage.session_id == session_id, PreviewMessage.sender == party,
                PreviewMessage.name == name).limit(1))
            if other is not None and other != pieces:
                raise ConflictError(f"match preview: {name} was sent in {other} pieces before")
            row = PreviewMessage(session_id=session_id, sender=party, name=name, piece=piece,
                                 pieces=pieces, size=len(data), digest=digest,
                                 created_at=utcnow())
            s.add(row)
            os.replace(tmp, final)
        return row
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def message_files(services: Services, room_id: str, caller: Caller, session_id: str,
                  sender: str, name: str) -> tuple[list[Path], int]:
    """The files of a complete message of ``sender`` (one of the session's parties), in
    order, and their total size. Raises ``NotFoundError`` until every piece is in."""
    _, session_id = _mine(services, room_id, caller, session_id)
    with services.db.read() as s:
        row = s.get(PreviewSession, session_id)
        if row is None or sender not in (row.opener, row.joiner):
            raise NotFoundError(NO_SESSION)
        pieces = list(s.scalars(select(PreviewMessage).where(
            PreviewMessage.session_id == session_id, PreviewMessage.sender == sender,
            PreviewMessage.name == name).order_by(PreviewMessage.piece)))
    if not pieces or len(pieces) != pieces[0].pieces or row.state != "running":
        raise NotFoundError("match preview: no such complete message (yet)")
    folder = _dir(services, session_id)
    return [folder / f"{sender}.{name}.{p.piece}" for p in pieces], sum(p.size for p in pieces)


def post_statement(services: Services, room_id: str, caller: Caller, session_id: str,
                   envelope: Envelope) -> PreviewView:
    """Keep the caller's signed ``match_preview`` statement of a running session: signed by
    the caller's manifest key, about this session, its datasets and its declared sizes.
    Once both parties' statements are in, the session is done and its messages are deleted.

    Raises ``SignatureError``/``InputError`` for a statement that does not verify or does not
    match the session, ``ConflictError`` for a second, different statement.
    """
    party, session_id = _mine(services, room_id, caller, session_id)
    view = active_room(services, room_id)
    preview = verify_match_preview(envelope, view.manifest, view.digest)
    if preview.party != party:
        raise Forbidden("match preview: a party posts its own statement")
    text = envelope_text(envelope)
    with services.db.write() as s:
        row = s.get(PreviewSession, session_id, with_for_update=True)
        if row is None:
            raise NotFoundError(NO_SESSION)
        mine, theirs = PreviewView(row).side(party)
        expected = (session_id, mine.dataset, theirs.party, theirs.dataset, mine.size,
                    theirs.size)
        got = (preview.session, preview.dataset, preview.partner, preview.partner_dataset,
               preview.own_size, preview.partner_size)
        if got != expected:
            raise InputError("match preview: the statement does not describe this session")
        slot = "opener_statement" if party == row.opener else "joiner_statement"
        stored = getattr(row, slot)
        if stored is not None:
            if stored != text:
                raise ConflictError("match preview: you posted another statement before")
        elif row.state != "running":
            raise ConflictError(f"match preview: this session is {row.state}")
        else:
            setattr(row, slot, text)
            row.updated_at = utcnow()
            if row.opener_statement and row.joiner_statement:
                _end(s, row, "done", row.updated_at)
        done = row.state == "done"
        messages = {} if done else _complete(s, session_id)
    if done:
        _remove(services, [session_id])
    return PreviewView(row, messages)
