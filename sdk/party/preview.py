"""Match previews: how many of my ids does a partner have, before either of us uploads?

:func:`preview_match` runs ECDH private-set-intersection cardinality (:mod:`sdk.protocol.psi`)
between this party's local file and a partner's, through the coordinator, which only relays
signed, opaque messages. Both parties run it (``sealroom match preview``); whichever comes
first waits for the other. Order, and what each step promises:

1. the pinned manifest is verified; this key must be the manifest's key of its party; the two
   datasets must belong to the two parties and have identifiers of one kind;
2. the file is read, checked against the dataset's schema and its identifiers validated and
   normalised by exactly the code ``data seal`` uses (:func:`sdk.party.datasets.prepare_dataset`:
   rows with an empty or invalid id are dropped and counted, or refused with ``strict``); the
   distinct ids are the set. Below the pair's minimum group size the preview is refused here
   (``E_PRIVACY``), before anything is sent;
3. the session is opened (or joined), declaring the set's size; the coordinator refuses a size
   below the minimum too. Once the partner has joined, its declared size must pass the same
   minimum, and its first request message must carry that size (else the session is aborted);
4. the protocol runs both ways on ``workers`` threads: this party's request and setup, then its
   answers to the partner's request parts as they arrive, then its own count from the
   partner's setup and responses. Every message is signed by its sender's key and checked
   before the library reads it;
5. this party signs its ``match_preview`` statement and posts it; then it waits for the
   partner's statement and verifies that it is signed by the partner's manifest key and agrees
   (same session and intersection, mirrored sizes). The coordinator deletes the messages once
   both statements are in.

Any failure before the end aborts the session (its messages are deleted). Progress is reported
as events: steps, and ``progress`` of :data:`WORK` (the protocol's elliptic-curve work, in
elements). The time limit covers the whole preview, waiting included.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdk.errors import (
    ConflictError,
    InputError,
    NetworkError,
    ResourceError,
    SealroomError,
    SignatureError,
)
from sdk.party.events import progress, step
from sdk.party.session import Session
from sdk.party.trust import PinnedRoom
from sdk.protocol.dsse import Envelope
from sdk.protocol.matchpreview import (
    MatchPreview,
    make_match_preview,
    pair_datasets,
    preview_min_group_size,
    verify_match_preview,
)
from sdk.protocol.models import Dataset, Manifest
from sdk.protocol.psi import (
    PsiContext,
    PsiParty,
    VerifiedSetup,
    check_session_id,
    check_set_size,
    encode_ids,
    message_cap,
    part_sizes,
)

WORK = "match preview"
"""The label of the protocol's progress events (``done`` of ``total`` elements processed)."""
ACTIVE = ("waiting", "running")
HEARTBEAT_S = 15.0


@dataclass(frozen=True)
class PreviewResult:
    """A finished preview: this party's verified statement (``preview``: the session, both
    datasets and sizes, the intersection), both signed statements, the minimum group size
    applied, the rows dropped from the file, and the time taken."""

    preview: MatchPreview
    min_group_size: int
    statement: Envelope
    partner_statement: Envelope
    rejected: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def own_rate(self) -> float:
        """The share of this party's ids the partner has."""
        return self.preview.intersection / self.preview.own_size

    @property
    def partner_rate(self) -> float:
        """The share of the partner's ids this party has."""
        return self.preview.intersection / self.preview.partner_size


@dataclass(frozen=True)
class PreviewRecord:
    """A session as ``match list`` shows it: its parties and sizes, and each party's
    verified statement (``None``: none, or one that does not verify)."""

    session: str
    state: str
    created_at: str
    sides: tuple[tuple[str, str, int | None], ...]
    statements: dict[str, MatchPreview]
    unverified: int = 0

    @property
    def agree(self) -> bool | None:
        """Whether both statements are in and agree (None until both are in)."""
        if len(self.statements) != 2:
            return None
        first, second = self.statements.values()
        return first.agrees_with(second)


def partner_dataset_for(manifest: Manifest, own: Dataset, partner: str) -> str:
    """The partner's one dataset with identifiers of ``own``'s kind. Raises ``InputError``
    when it has none or several (then name it)."""
    manifest.party(partner)
    names = [d.name for d in manifest.datasets
             if d.owner == partner and d.id_kind == own.id_kind]
    if len(names) != 1:
        which = "no dataset" if not names else f"several ({', '.join(names)})"
        raise InputError(f"{partner} has {which} with {own.id_kind} identifiers: pass "
                         "--partner-dataset NAME")
    return names[0]


def load_ids(source: Path, dataset: Dataset, *, region: str | None = None,
             strict: bool = False) -> tuple[list[str], dict[str, int]]:
    """The distinct normalised ids of ``source`` as ``data seal`` would seal them (the same
    :func:`sdk.party.datasets.prepare_dataset`), and the rows it dropped, per reason."""
    import pyarrow.parquet as pq

    from sdk.party.datasets import prepare_dataset

    if not source.is_file():
        raise InputError(f"data file {source} does not exist")
    with tempfile.TemporaryDirectory(prefix="sealroom-preview-") as tmp:
        prepared = prepare_dataset(source, dataset, Path(tmp), region=region, strict=strict)
        column = pq.read_table(prepared.path, columns=[dataset.id_column]).column(0)
        ids = list(dict.fromkeys(str(v) for v in column.to_pylist() if v is not None))
    return ids, dict(prepared.rejected)


class _Exchange:
    """One run of the two-way protocol over the coordinator (step 4 of the module doc)."""

    def __init__(self, session: Session, room: PinnedRoom, info: dict[str, Any],
                 party: PsiParty, partner_size: int, deadline: float, poll: float,
                 workers: int) -> None:
        self.session, self.room, self.party = session, room, party
        self.client = session.client()
        self.sid = str(info["session_id"])
        self.piece = int(info["piece_bytes"])
        self.partner = party.partner
        self.n_me, self.n_them = party.size, partner_size
        self.deadline, self.poll, self.workers = deadline, poll, workers
        self.done = 0
        self.total = 3 * self.n_me + self.n_them  # request, setup and count; answers

    def _tick(self, elements: int) -> None:
        self.done += elements
        self.session.emit(progress(WORK, self.done, self.total))

    def _info(self) -> dict[str, Any]:
        info = self.client.preview(self.room.room_id, self.sid)
        state = info.get("state")
        if state != "running":
            raise ConflictError(f"match preview: the session is {state} (aborted by "
                                f"{self.partner}, or expired)")
        return info

    def _available(self) -> set[str]:
        messages = self._info().get("messages") or {}
        return set(messages.get(self.partner) or [])

    def _fetch(self, name: str) -> bytes:
        cap = message_cap(name, self.n_them, self.n_me)
        return self.client.preview_message(self.room.room_id, self.sid, self.partner, name, cap)

    def _send(self, name: str, frame: bytes) -> None:
        self.client.put_preview_message(self.room.room_id, self.sid, name, frame, self.piece)

    def _wait(self) -> None:
        if time.monotonic() > self.deadline:
            raise ResourceError(f"match preview: {self.partner}'s messages did not arrive "
                                "within the time limit")
        time.sleep(self.poll)

    def run(self) -> int:
        """Send everything, answer the partner, and return this party's count."""
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="psi")
        failed = True
        try:
            total = self._run(pool)
            failed = False
            return total
        finally:  # on a failure, drop the queued work rather than finish it
            pool.shutdown(wait=not failed, cancel_futures=True)

    def _run(self, pool: ThreadPoolExecutor) -> int:
        mine, theirs = part_sizes(self.n_me), part_sizes(self.n_them)
        setup: Future[bytes] = pool.submit(self.party.setup, self.n_them)
        requests = [pool.submit(self.party.request, i) for i in range(len(mine))]
        for i, future in enumerate(requests):
            self._send(f"request-{i}", future.result())
            self._tick(mine[i])
        self.session.emit(step(f"sent {self.n_me} encrypted ids in {len(mine)} part(s)"))
        answers: dict[int, Future[list[bytes]]] = {}
        while len(answers) < len(theirs):
            available = self._available()
            new = [i for i in range(len(theirs))
                   if i not in answers and f"request-{i}" in available]
            for i in new:
                frame = self._fetch(f"request-{i}")
                if i == 0 and self.party.request_size(frame) != self.n_them:
                    raise InputError(f"match preview: {self.partner}'s request carries "
                                     "another set size than it declared")
                answers[i] = pool.submit(self.party.answer, i, frame, self.n_them)
            if not new:
                self._wait()
        self._send("setup", setup.result())
        self._tick(self.n_me)
        answered = []
        for i in range(len(theirs)):
            answered.append(answers[i].result())
            self._tick(theirs[i])
        for i, frame in enumerate(self.party.responses(answered, self.n_them)):
            self._send(f"response-{i}", frame)
        self.session.emit(step(f"answered {self.partner}'s {self.n_them} encrypted ids"))
        verified: VerifiedSetup | None = None
        counts: dict[int, Future[int]] = {}
        while len(counts) < len(mine):
            available = self._available()
            progressed = False
            if verified is None and "setup" in available:
                verified = self.party.read_setup(self._fetch("setup"), self.n_them)
                progressed = True
            if verified is not None:
                for i in range(len(mine)):
                    if i not in counts and f"response-{i}" in available:
                        frame = self._fetch(f"response-{i}")
                        counts[i] = pool.submit(self.party.count, verified, i, frame)
                        progressed = True
            if not progressed:
                self._wait()
        total = 0
        for i in range(len(mine)):
            total += counts[i].result()
            self._tick(mine[i])
        return total


def _partner_statement(info: dict[str, Any], room: PinnedRoom, partner: str
                       ) -> tuple[Envelope, MatchPreview] | None:
    for raw in info.get("statements") or []:
        try:
            envelope = Envelope.from_dict(raw)
            preview = verify_match_preview(envelope, room.manifest, room.digest)
        except SealroomError:
            continue
        if preview.party == partner and preview.session == info.get("session_id"):
            return envelope, preview
    return None


def preview_match(session: Session, room: PinnedRoom, source: Path, dataset: str, partner: str,
                  *, partner_dataset: str | None = None, region: str | None = None,
                  strict: bool = False, timeout: float = 1800.0, poll: float = 0.25,
                  workers: int | None = None) -> PreviewResult:
    """Run a match preview of ``source`` (this party's local file of ``dataset``) with
    ``partner`` (its ``partner_dataset``, found in the manifest when there is one), within
    ``timeout`` seconds; see the module's docstring for the steps and their promises.

    Raises:
        PrivacyError: either set below the pair's minimum group size (before anything is sent
            when it is this party's).
        InputError: a file or dataset that does not fit, a malformed partner message, a
            partner whose messages do not carry the size it declared.
        SignatureError: a message or statement not signed by the partner's manifest key; this
            key is not the manifest's.
        ConflictError: the session was aborted or expired, or the statements disagree.
        ResourceError: the partner did not join or answer within ``timeout``.
    """
    started = time.monotonic()
    deadline = started + timeout
    key = session.key()
    manifest = room.manifest
    if manifest.party(key.name).identity.signing_key != key.signer.public_key:
        raise SignatureError(f"this key is not the key the manifest lists for {key.name}")
    own = manifest.dataset(dataset)
    partner_dataset = partner_dataset or partner_dataset_for(manifest, own, partner)
    pair_datasets(manifest, key.name, dataset, partner, partner_dataset)
    minimum = preview_min_group_size(manifest, dataset, partner_dataset)
    ids, rejected = load_ids(source, own, region=region, strict=strict)
    session.emit(step(f"read {source.name}: {len(ids)} distinct valid {own.id_kind} ids"
                      + (f" ({sum(rejected.values())} rows dropped)" if rejected else "")))
    check_set_size(len(ids), minimum, "your")
    client = session.client()
    info = client.open_preview(room.room_id, dataset, partner, partner_dataset, len(ids))
    sid = check_session_id(info.get("session_id"))
    finished = False
    try:
        session.emit(step(f"preview session {sid[:12]}: "
                          + ("waiting for " + partner if info.get("state") == "waiting"
                             else "joined " + partner)))
        info = _wait_for_partner(session, room, sid, partner, deadline, poll,
                                 announce=info.get("state") == "waiting")
        declared = next(int(s["size"]) for s in info["parties"] if s["party"] == partner)
        check_set_size(declared, minimum, f"{partner}'s")
        context = PsiContext(room.room_id, room.digest, sid, own.id_kind)
        party = PsiParty(context, key.name, key.signer, partner,
                         manifest.party(partner).identity.signing_key, encode_ids(context, ids))
        del ids
        threads = workers or max(1, min(2, os.cpu_count() or 1))
        intersection = _Exchange(session, room, info, party, declared, deadline, poll,
                                 threads).run()
        statement = make_match_preview(
            key, manifest, room.digest, session=sid, dataset=dataset, partner=partner,
            partner_dataset=partner_dataset, own_size=party.size, partner_size=declared,
            intersection=intersection)
        client.submit_preview_statement(room.room_id, sid, statement)
        session.emit(step(f"signed and posted the statement: {intersection} in common"))
        mine = verify_match_preview(statement, manifest, room.digest)
        theirs_envelope, theirs = _wait_for_statement(session, room, sid, partner, deadline,
                                                      poll)
        if not mine.agrees_with(theirs):
            raise ConflictError(
                f"match preview: {partner}'s statement disagrees (it counts {theirs.intersection}"
                f" in common of {theirs.own_size}/{theirs.partner_size}; this party "
                f"{intersection} of {party.size}/{declared})")
        finished = True
        return PreviewResult(mine, minimum, statement, theirs_envelope, rejected,
                             time.monotonic() - started)
    finally:
        if not finished:
            with contextlib.suppress(SealroomError):
                client.abort_preview(room.room_id, sid)


def _wait_for_partner(session: Session, room: PinnedRoom, sid: str, partner: str,
                      deadline: float, poll: float, *, announce: bool) -> dict[str, Any]:
    client = session.client()
    beat = time.monotonic() + HEARTBEAT_S
    while True:
        info = client.preview(room.room_id, sid)
        state = info.get("state")
        if state == "running":
            if announce:
                session.emit(step(f"{partner} joined"))
            return info
        if state != "waiting":
            raise ConflictError(f"match preview: the session is {state}")
        now = time.monotonic()
        if now > deadline:
            raise ResourceError(f"match preview: {partner} did not join within the time limit "
                                f"(they run `sealroom match preview` too)")
        if now > beat:
            session.emit(step(f"still waiting for {partner} to run `sealroom match preview`"))
            beat = now + HEARTBEAT_S
        time.sleep(poll)


def _wait_for_statement(session: Session, room: PinnedRoom, sid: str, partner: str,
                        deadline: float, poll: float) -> tuple[Envelope, MatchPreview]:
    client = session.client()
    while True:
        info = client.preview(room.room_id, sid)
        found = _partner_statement(info, room, partner)
        if found is not None:
            return found
        if info.get("state") not in ACTIVE:
            raise ConflictError(f"match preview: the session is {info.get('state')} without "
                                f"a valid statement of {partner}")
        if time.monotonic() > deadline:
            raise ResourceError(f"match preview: {partner}'s statement did not arrive within "
                                "the time limit")
        time.sleep(poll)


def list_previews(session: Session, room: PinnedRoom) -> list[PreviewRecord]:
    """This party's preview sessions in the room, each statement verified against the
    pinned manifest (one that does not verify is counted in ``unverified``, never shown)."""
    records = []
    for info in session.client().previews(room.room_id):
        statements: dict[str, MatchPreview] = {}
        unverified = 0
        for raw in info.get("statements") or []:
            try:
                preview = verify_match_preview(Envelope.from_dict(raw), room.manifest,
                                               room.digest)
            except SealroomError:
                unverified += 1
                continue
            if preview.session != info.get("session_id"):
                unverified += 1
                continue
            statements[preview.party] = preview
        try:
            sides = tuple((str(s["party"]), str(s["dataset"]),
                           None if s.get("size") is None else int(s["size"]))
                          for s in info["parties"])
            records.append(PreviewRecord(str(info["session_id"]), str(info["state"]),
                                         str(info["created_at"]), sides, statements,
                                         unverified))
        except (KeyError, TypeError, ValueError) as exc:
            raise NetworkError("coordinator answered with a malformed preview session") from exc
    return records


__all__ = [
    "WORK",
    "PreviewRecord",
    "PreviewResult",
    "list_previews",
    "load_ids",
    "partner_dataset_for",
    "preview_match",
]
