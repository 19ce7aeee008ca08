"""Runs: a durable queue in the database, executed in the background.

* ``queued`` runs are claimed by one dispatcher thread and executed by a pool of at most
  ``run_concurrency`` threads; a room never has two runs ``running`` at once (ADR 0004).
* Every run ends in exactly one terminal state (``succeeded``/``refused``/``failed``): the
  transition is a conditional update from ``running``, in the same transaction that stores the
  receipt, the sealed outputs' references and the log entries (appended with a
  compare-and-swap on the log head).
* At start-up, runs left ``running`` by a crashed coordinator are reconciled: their worker
  containers are found by label and removed, and the run fails with ``E_INTERNAL`` (its
  result, if any, was never stored; the log is unchanged, so a new run is safe).
"""

from __future__ import annotations

import logging
import shutil
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError

from coordinator.context import Caller, Services
from coordinator.jobs import JobInputs, gather, write_job_dir
from coordinator.launchers.base import JOB_MOUNT, remove_secrets
from coordinator.launchers.docker import WARM_PREFIX, DockerLauncher
from coordinator.launchers.reaper import reap_orphans
from coordinator.logstore import append
from coordinator.results import Outcome, ResultError, check_result
from coordinator.rooms import require_party
from coordinator.sources import collect_sources
from coordinator.storage.db import utcnow
from coordinator.storage.models import MatchRateRow, OutputRow, Room, RunRow
from coordinator.worker import read_platform_key
from sdk.errors import ConfigError, ConflictError, NotFoundError, ResourceError, SealroomError
from sdk.protocol import jobdir as layout
from sdk.protocol.models import Bundle

log = logging.getLogger("sealroom.runs")
TERMINAL = ("succeeded", "refused", "failed")
INTERRUPTED = "interrupted: the coordinator stopped during the run; request a new run"


def precheck(services: Services, room_id: str, bundle_digest: str) -> Bundle:
    """Reject early what the worker would refuse anyway: an unknown bundle, missing approvals,
    an unaccepted worker, missing uploads (the five steps of
    :func:`coordinator.sources.collect_sources`). Returns the bundle (the worker re-verifies
    all of it).

    Raises the errors of ``collect_sources`` with ``require_approved``.
    """
    return collect_sources(services, room_id, bundle_digest, require_approved=True).bundle


def create_run(services: Services, room_id: str, caller: Caller, bundle_digest: str,
               idempotency_key: str | None) -> tuple[RunRow, bool]:
    """Queue a run (or return the run already created with this idempotency key).

    Raises ``ConflictError`` when the key was used for another bundle, and the pre-check's
    errors for a run that cannot succeed.
    """
    party = require_party(services, room_id, caller)
    assert caller.key is not None
    if idempotency_key is not None:
        existing = _by_key(services, room_id, caller.key, idempotency_key)
        if existing is not None:
            if existing.bundle_digest != bundle_digest:
                raise ConflictError("Idempotency-Key already used for another bundle")
            return existing, False
    bundle = precheck(services, room_id, bundle_digest)
    row = RunRow(run_id=f"run-{uuid.uuid4().hex}", room_id=room_id, bundle_digest=bundle_digest,
                 requested_by=party, requester_key=caller.key, idempotency_key=idempotency_key,
                 state="queued", message="", recipients=",".join(bundle.recipients),
                 created_at=utcnow())
    try:
        with services.db.write() as s:
            s.add(row)
    except IntegrityError:
        again = _by_key(services, room_id, caller.key, idempotency_key or "")
        if again is None or again.bundle_digest != bundle_digest:
            raise ConflictError("Idempotency-Key already used for another bundle") from None
        return again, False
    if services.executor is not None:
        services.executor.wake()
    return row, True


def _by_key(services: Services, room_id: str, key: str, idem: str) -> RunRow | None:
    with services.db.read() as s:
        return s.scalars(select(RunRow).where(
            RunRow.room_id == room_id, RunRow.requester_key == key,
            RunRow.idempotency_key == idem)).first()


def get_run(services: Services, room_id: str, run_id: str) -> RunRow:
    """A run of a room. Raises ``NotFoundError``."""
    with services.db.read() as s:
        row = s.get(RunRow, run_id)
    if row is None or row.room_id != room_id:
        raise NotFoundError("no such run in this room")
    return row


def list_runs(services: Services, room_id: str) -> list[RunRow]:
    """Every run of a room, oldest first."""
    with services.db.read() as s:
        return list(s.scalars(select(RunRow).where(RunRow.room_id == room_id)
                              .order_by(RunRow.created_at, RunRow.run_id)))


def _finish(services: Services, run_id: str, outcome: Outcome, old_size: int = 0) -> bool:
    """Store a terminal state (and, for a signed result, the log append, receipt and outputs'
    references) in one transaction. False when the run was no longer ``running``."""
    digests = {r: services.blobs.put_bytes(data) for r, data in outcome.outputs.items()}
    signed = outcome.signed
    try:
        with services.db.write() as s:
            done = s.execute(update(RunRow).where(
                RunRow.run_id == run_id, RunRow.state == "running").values(
                state=outcome.status, error_code=outcome.error_code,
                message=outcome.message[:500], finished_at=utcnow(),
                receipt=None if signed is None else signed.receipt.to_json().decode(),
                log_index=None if signed is None else signed.parsed_receipt.log_index))
            if not isinstance(done, CursorResult) or done.rowcount != 1:
                raise _NotRunning()
            if signed is not None:
                room = s.get(Room, signed.parsed_receipt.room_id, with_for_update=True)
                assert room is not None
                append(s, room.room_id, old_size, signed.entries, signed.parsed_entries,
                       signed.checkpoint, signed.tree_size, signed.root_hash)
                receipt = signed.parsed_receipt
                owners = {m.dataset: m.party for m in receipt.match}
                for m in receipt.match:
                    partners = sorted({p for d, p in owners.items() if d != m.dataset})
                    s.add(MatchRateRow(
                        run_id=run_id, dataset=m.dataset, room_id=room.room_id, party=m.party,
                        partners=",".join(partners), created_at=utcnow(),
                        rate=None if m.rate is None else float(m.rate)))
            for recipient, digest in digests.items():
                s.add(OutputRow(run_id=run_id, recipient=recipient, ciphertext_digest=digest,
                                size=len(outcome.outputs[recipient])))
    except _NotRunning:
        return False
    except IntegrityError:
        # the log head moved under us (another append on the same head): fail, log untouched
        return _finish(services, run_id, Outcome(
            "failed", "E_LOG", "the log changed while the run was executing"))
    return True


class _NotRunning(Exception):
    pass


def _fail(services: Services, run_id: str, code: str, message: str) -> None:
    _finish(services, run_id, Outcome("failed", code, message))


def execute_run(services: Services, run_id: str) -> None:
    """Run one claimed run to its terminal state. Never raises."""
    job = services.jobs_dir / run_id
    try:
        with services.db.read() as s:
            run = s.get(RunRow, run_id)
        assert run is not None
        inputs = gather(services, run)
        shutil.rmtree(job, ignore_errors=True)
        write_job_dir(services, inputs, job)
        outcome = _launch_and_check(services, inputs, job)
        _finish(services, run_id, outcome, inputs.log.size)
    except ResultError as exc:
        _fail(services, run_id, exc.error_code, exc.message)
    except ConfigError as exc:
        _fail(services, run_id, "E_CONFIG", exc.message)
    except ResourceError as exc:
        _fail(services, run_id, "E_RESOURCE", exc.message)
    except SealroomError as exc:
        _fail(services, run_id, exc.code, exc.message)
    except Exception as exc:
        log.exception("run %s failed unexpectedly", run_id)
        _fail(services, run_id, "E_INTERNAL", f"coordinator error ({type(exc).__name__})")
    finally:
        shutil.rmtree(job, ignore_errors=True)


def _launch_and_check(services: Services, inputs: JobInputs, job: Path) -> Outcome:
    launcher = services.launcher
    worker = inputs.sources.worker
    seed = read_platform_key(services.settings.platform_key_file)
    # --image-id: the provisioned worker's measurement (the image's tree digest, which gather()
    # compared with the image the launcher runs now), never the Docker image id
    result = launcher.launch(
        job,
        ["run", "--job", JOB_MOUNT, "--image-id", worker.image_id,
         "--isolation", launcher.isolation],
        {layout.PLATFORM_KEY_SECRET: seed, layout.SEALED_WORKER_KEY_SECRET: worker.sealed_key},
        run_id=inputs.run_id, deadline_s=services.settings.run_deadline_s)
    resource = result.resource_error()
    if resource is not None:
        raise resource
    if launcher.isolation == "container" and launcher.ran_measurement(result) != worker.image_id:
        # the tag moved to another image since gather() compared them
        raise ConfigError("the worker image changed during the run: provision again")
    if result.exit_code != 0 and not result.stdout:
        raise ResultError("E_INTERNAL", f"the worker exited with status {result.exit_code}")
    return check_result(result.stdout, inputs, services.settings.max_result_bytes)


def reconcile(services: Services) -> list[str]:
    """Bring runs left ``running`` by a previous process to one terminal state (failed,
    E_INTERNAL) after removing their worker containers (found by label); returns their ids."""
    with services.db.read() as s:
        stale = list(s.scalars(select(RunRow.run_id).where(RunRow.state == "running")))
    launcher = services.launcher
    if isinstance(launcher, DockerLauncher):  # nothing runs yet: every one is orphaned
        try:
            reap_orphans(launcher.client, instance=services.settings.instance)
        except Exception as exc:  # engine down: the runs still fail; reap again later
            log.warning("could not reap worker containers: %s", type(exc).__name__)
    for run_id in stale:
        _fail(services, run_id, "E_INTERNAL", INTERRUPTED)
        shutil.rmtree(services.jobs_dir / run_id, ignore_errors=True)
    for waiting in services.jobs_dir.glob(f"{WARM_PREFIX}*"):  # a waiting worker's, left by a crash
        remove_secrets(waiting)
        shutil.rmtree(waiting, ignore_errors=True)
    return stale


class RunExecutor:
    """The background executor: one dispatcher thread, a bounded worker pool."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.limit = services.settings.run_concurrency
        self._pool = ThreadPoolExecutor(max_workers=self.limit, thread_name_prefix="sealroom-run")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="sealroom-dispatch", daemon=True)

    def start(self) -> None:
        """Reconcile stale runs, then start dispatching."""
        reconcile(self.services)
        self._thread.start()

    def wake(self) -> None:
        """Look at the queue now."""
        self._wake.set()

    def stop(self, wait: bool = True) -> None:
        """Stop dispatching; with ``wait``, let the runs in flight finish."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=wait, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._dispatch()
            except Exception:
                log.exception("dispatcher error")
            self._wake.wait(self.services.settings.poll_interval_s)
            self._wake.clear()

    def _dispatch(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                if len(self._busy) >= self.limit:
                    return
                claimed = self._claim()
            if claimed is None:
                return
            run_id, room_id = claimed
            self._pool.submit(self._run, run_id, room_id)

    def _claim(self) -> tuple[str, str] | None:
        """Mark the oldest runnable queued run ``running`` (one per room)."""
        with self.services.db.write() as s:
            running = set(s.scalars(select(RunRow.room_id).where(RunRow.state == "running")))
            busy = running | self._busy
            for run in s.scalars(select(RunRow).where(RunRow.state == "queued")
                                 .order_by(RunRow.created_at, RunRow.run_id)):
                if run.room_id in busy:
                    continue
                run.state, run.started_at = "running", utcnow()
                self._busy.add(run.room_id)
                return run.run_id, run.room_id
        return None

    def _run(self, run_id: str, room_id: str) -> None:
        try:
            execute_run(self.services, run_id)
        finally:
            with self._lock:
                self._busy.discard(room_id)
            self._wake.set()


__all__ = ["TERMINAL", "RunExecutor", "create_run", "execute_run", "get_run", "list_runs",
           "reconcile"]
