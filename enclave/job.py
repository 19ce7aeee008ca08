"""One job, end to end, inside the worker: verify → decrypt → run → privacy → seal → receipt.

The supervisor (this module) holds the worker keys; query code runs in a separate keyless
runner process. Whatever happens, the result is one document on stdout: a signed receipt,
the log entries this run appended and a new signed checkpoint, plus sealed outputs on success.
No traceback, printed output or cell value ever leaves: errors are reduced to their code and
a message built from names and digests only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from enclave.jobdir import JobFiles, read_secret
from enclave.ledger import MATCH_INPUTS, ONE_ROW_CHECKED, RoomLog
from enclave.measure import code_digest
from enclave.memfile import MemFile
from enclave.outputs import result_document, seal_output
from enclave.state import TrustedJobState
from enclave.worker_keys import WorkerKeys, unseal_worker_keys
from sdk.errors import (
    AttestationError,
    ConfigError,
    DecryptionError,
    InputError,
    LogError,
    SealroomError,
)
from sdk.protocol import jobdir as layout
from sdk.protocol.admission import guarantee_of
from sdk.protocol.clock import utcnow
from sdk.protocol.dsse import sign_envelope
from sdk.protocol.keys import Signer
from sdk.protocol.models import Measurement, Upload
from sdk.protocol.records import (
    Checkpoint,
    MatchRecord,
    OutputRecord,
    PrivacyRecord,
    Receipt,
)
from sdk.protocol.sealing import open_to_buffer, upload_binding
from sdk.protocol.spec import OutputSpec
from sdk.protocol.verify import receipt_core_digest

if TYPE_CHECKING:  # pragma: no cover - pyarrow and release load only when a run gets there
    import pyarrow as pa

    from enclave.release import Released
    from enclave.runner.client import Runner

MAX_PLAINTEXT_BYTES = 16 * 1024**3
_SAFE_MESSAGE_CODES = {
    "E_SIGNATURE",
    "E_INPUT",
    "E_ATTESTATION",
    "E_LOG",
    "E_PRIVACY",
    "E_QUERY_REJECTED",
    "E_CONFIG",
    "E_RESOURCE",
}


def check_columns(parquet: bytes | memoryview, expected: list[str], dataset: str,
                  rows: int | None = None) -> None:
    """The decrypted file must be Parquet with exactly the manifest's columns and, when
    ``rows`` is given, exactly the row count its owner signed (read from the footer only):
    resources and overflow checks are sized from signed counts, so they must be true.
    Raises ``InputError`` naming the dataset, never a value."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_metadata(pa.BufferReader(parquet))
        schema = metadata.schema.to_arrow_schema()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InputError(f"upload: {dataset!r} is not a Parquet file") from exc
    if sorted(schema.names) != sorted(expected):
        raise InputError(f"upload: columns of {dataset!r} differ from the manifest's schema")
    if rows is not None and metadata.num_rows != rows:
        raise InputError(f"upload: {dataset!r} holds another row count than its owner signed")


class _Timer:
    """Step durations. Receipts carry them only as whole seconds (in milliseconds, floored):
    a finer timing could carry a bit of the data to whoever reads the receipt."""

    def __init__(self) -> None:
        self.ms: dict[str, int] = {}

    def whole_seconds(self) -> dict[str, int]:
        return {step: ms // 1000 * 1000 for step, ms in self.ms.items()}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0) + int((time.perf_counter() - start) * 1000)


def _preload(*modules: str) -> threading.Thread:
    """Import ``modules`` in a background thread (the main thread waits on the runner)."""
    import importlib

    def load() -> None:
        for module in modules:
            with suppress(Exception):  # the real import, later, reports any problem
                importlib.import_module(module)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    return thread


def failure_document(code: str) -> dict[str, Any]:
    """The result document of a run that ended before it could sign anything."""
    return {
        "status": "failed",
        "error_code": code,
        "receipt": None,
        "checkpoint": None,
        "log_entries": [],
        "outputs": {},
    }


def error_code_of(exc: BaseException) -> str:
    """The stable code of an error; anything unexpected is ``E_INTERNAL``."""
    code = getattr(exc, "code", None)
    if (
        isinstance(exc, SealroomError | Exception)
        and isinstance(code, str)
        and code.startswith("E_")
    ):
        return code
    return "E_INTERNAL"


def safe_message(exc: BaseException) -> str:
    """A message that may leave the worker: only for verification-type errors, whose messages
    are built from names and digests; never for runtime errors of query code."""
    code = error_code_of(exc)
    if code in _SAFE_MESSAGE_CODES:
        message = getattr(exc, "message", "")
        return message[:300] if isinstance(message, str) else ""
    return ""


class Job:
    """Runs one job directory. ``run()`` never raises; it returns the result document."""

    def __init__(
        self,
        root: Path,
        *,
        image_id: str,
        isolation: str,
        now: Callable[[], datetime] = utcnow,
        runner: Runner | None = None,
    ) -> None:
        self.root = root
        self.isolation = isolation
        self.measurement = Measurement(image_id=image_id, code_digest=code_digest())
        self.clock = now
        self.timer = _Timer()
        self.files: dict[str, MemFile] = {}
        self.runner: Runner | None = runner
        self.one_row_checked: list[str] = []

    def run(self) -> dict[str, Any]:
        """Execute the job; returns the result document (see docs/job-protocol.md)."""
        try:
            return self._run()
        finally:
            if self.runner is not None:
                self.runner.close()

    def _run(self) -> dict[str, Any]:
        try:
            with self.timer.step("verify"):
                files = JobFiles.load(self.root)
                if self.runner is None:
                    from enclave.resources import start_runner

                    self.runner = start_runner(self.root)
                keys = self._unseal_keys()
                state = TrustedJobState(now=self.clock())
                state.verify_manifest(files.manifest)
                if state.manifest.room_id != files.room_id:
                    raise InputError("job: manifest of another room")
                state.verify_attestation(
                    files.attestations[0], files.attestations[1:], keys, self.measurement
                )
        except Exception as exc:  # nothing trusted yet: no receipt can be signed
            return failure_document(error_code_of(exc))
        return self._run_trusted(files, keys, state)

    def _unseal_keys(self) -> WorkerKeys:
        try:
            platform = read_secret(self.root, layout.PLATFORM_KEY_SECRET)
            sealed = read_secret(self.root, layout.SEALED_WORKER_KEY_SECRET)
        except InputError as exc:
            raise ConfigError("worker: secrets were not handed over") from exc
        return unseal_worker_keys(sealed, platform, self.measurement)

    def _run_trusted(
        self, files: JobFiles, keys: WorkerKeys, state: TrustedJobState
    ) -> dict[str, Any]:
        signer = keys.signer
        try:
            with self.timer.step("verify"):
                state.verify_bundle(files.bundle)
                state.verify_approvals(files.approvals)
                state.verify_log(files.log_entries, files.checkpoint)
                spec = self._output_spec(state)
                state.check_budget_and_inputs(files.uploads, spec.epsilon, spec.delta)
                self._check_plan_fits(state)
        except Exception as exc:
            return self._refuse(files, keys, state, exc)

        log = state.log
        run_id = files.run_id
        self._record_start(state, log, signer, run_id)
        outputs: dict[str, str] = {}
        records: list[OutputRecord] = []
        privacy: PrivacyRecord | None = None
        match: tuple[MatchRecord, ...] = ()
        status, code, message = "succeeded", None, ""
        tables: dict[str, memoryview] = {}
        try:
            with self.timer.step("decrypt"):
                tables = self._decrypt(files, state, keys)
            state.mark("decrypt")
            # the release's modules (OpenDP, numpy) load while the query runs
            preload = _preload("enclave.release", "enclave.privacy.aggregate",
                               "enclave.privacy._post")
            with self.timer.step("run"):
                table = self._run_query(state, tables)
            preload.join()
            state.mark("run")
            with self.timer.step("privacy"):
                released, privacy = self._apply_privacy(state, table, tables)
            match = released.match
            state.mark("privacy")
            with self.timer.step("seal"):
                outputs, records = self._seal(state, run_id, released)
            state.mark("seal")
        except Exception as exc:
            status, code, message = "failed", error_code_of(exc), safe_message(exc)
            outputs, records, match = {}, [], ()
        self._free_inputs(tables)
        return self._finish(
            files, keys, state, status, code, message, outputs, records, privacy, log,
            match=match,
        )

    # -- steps -------------------------------------------------------------------------------

    def _free_inputs(self, tables: dict[str, memoryview]) -> None:
        """Free the decrypted inputs once the outputs are sealed: a process that runs another
        job next (a test, a benchmark) must not hold two jobs' plaintext. A file still
        referenced elsewhere is left to the garbage collector."""
        for view in tables.values():
            try:
                view.release()
            except BufferError:
                pass
        tables.clear()
        for memfile in self.files.values():
            try:
                memfile.close()
            except BufferError:
                pass
        self.files.clear()

    def _output_spec(self, state: TrustedJobState) -> OutputSpec:
        """The signed output spec (admission, in ``verify_bundle``, checked that a plan or
        template bundle's spec is exactly the one its plan implies)."""
        return state.bundle.output

    @staticmethod
    def _check_plan_fits(state: TrustedJobState) -> None:
        """A plan's exact sums must fit, judged from the row counts the owners signed."""
        plan = state.bundle.plan
        if plan is not None:
            from enclave.planrun import check_sums_fit

            check_sums_fit(plan, state.bundle, state.row_counts())

    def _record_start(
        self, state: TrustedJobState, log: RoomLog, signer: Signer, run_id: str
    ) -> None:
        if not log.entries:
            log.append(signer, "manifest_accepted", run_id, state.manifest_digest)
        for _upload, digest in state.uploads.values():
            if not log.has("upload_consumed", digest):
                log.append(signer, "upload_consumed", run_id, digest)
        if not log.has("bundle_approved", state.bundle_digest):
            log.append(
                signer,
                "bundle_approved",
                run_id,
                state.bundle_digest,
                {"approvals": list(state.approvals.digests)},
            )
        started: dict[str, Any] = {"inputs": [d for _, d in state.uploads.values()]}
        isolation = self._isolation_digest()
        if isolation:
            started["isolation_settings"] = isolation
        log.append(signer, "run_started", run_id, state.bundle_digest, started)
        for check in state.budget:
            if check.cost > 0 or check.delta_cost > 0:
                log.append(
                    signer,
                    "budget_charged",
                    run_id,
                    state.bundle_digest,
                    {
                        "dataset": check.dataset,
                        "epsilon": str(check.cost),
                        "delta": str(check.delta_cost),
                    },
                )

    def _isolation_digest(self) -> str:
        """The digest of the isolation settings the launcher inspected, as it handed it over
        (relayed by the untrusted coordinator: recorded, not relied upon); "" when absent."""
        try:
            text = read_secret(self.root, layout.ISOLATION_DIGEST_SECRET).decode("ascii")
        except (InputError, UnicodeDecodeError):
            return ""
        return text if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else ""

    def _decrypt(
        self, files: JobFiles, state: TrustedJobState, keys: WorkerKeys
    ) -> dict[str, memoryview]:
        """Decrypt every chosen upload into one in-memory file each (:class:`MemFile`), sized
        from its signed ciphertext size (:func:`sdk.protocol.sealing.open_to_buffer`): the
        plaintext exists once, in memory; a plan's runner reads it in place through an
        inherited descriptor, custom code gets it streamed from a read-only view.

        Raises ``DecryptionError`` (any failure to open, or a file of another size than the
        upload statement signs), ``ResourceError`` (above the plaintext cap) and ``InputError``
        (not Parquet with the manifest's columns).
        """
        def decrypt(name: str, upload: Upload) -> MemFile:
            path = files.sealed_path(upload.ciphertext_digest)
            try:
                if path.stat().st_size != upload.ciphertext_size:
                    raise DecryptionError()
                with open(path, "rb") as handle:
                    plaintext: MemFile = open_to_buffer(
                        handle,
                        keys.pair.encryption_private,
                        ciphertext_size=upload.ciphertext_size,
                        max_plaintext_bytes=MAX_PLAINTEXT_BYTES,
                        expected_commitment=upload.key_commitment,
                        expected_binding=upload_binding(
                            upload.room_id, upload.manifest_digest, name, upload.version
                        ),
                        allocate=MemFile,
                    )
            except OSError as exc:
                raise DecryptionError() from exc
            return plaintext

        # one thread per input (AES-GCM, reads and page allocation all release the GIL); the
        # first failure in input order is the one raised
        from concurrent.futures import ThreadPoolExecutor

        chosen = list(state.uploads.items())
        with ThreadPoolExecutor(max_workers=max(1, min(2, len(chosen)))) as pool:
            futures = [(name, pool.submit(decrypt, name, upload))
                       for name, (upload, _digest) in chosen]
        failure: BaseException | None = None
        for name, future in futures:
            error = future.exception()
            if error is None:
                self.files[name] = future.result()
            elif failure is None:
                failure = error
        if failure is not None:
            raise failure
        tables: dict[str, memoryview] = {}
        for name, (upload, _digest) in chosen:
            tables[name] = self.files[name].view()
            check_columns(tables[name], [c.name for c in state.manifest.dataset(name).schema],
                          name, upload.row_count)
        return tables

    def _run_query(self, state: TrustedJobState, tables: Mapping[str, memoryview]) -> pa.Table:
        from enclave.resources import runner_limits
        from enclave.runner import run_query

        bundle = state.bundle
        if bundle.plan is not None:
            from enclave.planrun import run_plan

            one_row, unchecked = state.one_row_inputs()
            table = run_plan(bundle, state.manifest, tables, state.row_counts(), self.files,
                             self.runner, match_stats=state.known_match is None,
                             one_row=one_row, check_one_row=unchecked)
            self.one_row_checked = [state.uploads[d][1] for d in unchecked]
            return table
        kind: Literal["python", "sql"] = "python" if bundle.kind == "python" else "sql"
        if self.runner is not None:
            return self.runner.run(kind, bundle.code, tables, dict(bundle.params))
        limits = runner_limits(sum(len(t) for t in tables.values()))
        return run_query(kind, bundle.code, tables, dict(bundle.params), limits)

    def _apply_privacy(
        self, state: TrustedJobState, table: pa.Table, tables: Mapping[str, memoryview]
    ) -> tuple[Released, PrivacyRecord]:
        from enclave.release import apply_privacy

        released = apply_privacy(state, table, tables)
        budget_left = dict(state.budget_left())
        record = PrivacyRecord(
            mode=state.bundle.output.mode,
            min_group_size=state.min_group_size(),
            guarantee=guarantee_of(state.bundle),
            epsilon_charged=str(state.bundle.output.epsilon),
            delta_charged=str(state.bundle.output.delta),
            budget_left=budget_left,
        )
        return released, record

    def _seal(
        self, state: TrustedJobState, run_id: str, released: Released
    ) -> tuple[dict[str, str], list[OutputRecord]]:
        columns, rows, meta = released.columns, released.rows, released.meta
        plaintext = result_document(columns, rows, meta)
        outputs: dict[str, str] = {}
        records: list[OutputRecord] = []
        for recipient in state.bundle.recipients:
            party = state.manifest.party(recipient)
            sealed, record = seal_output(
                plaintext,
                recipient,
                party.identity.encryption_key,
                state.manifest.room_id,
                run_id,
                len(rows),
            )
            outputs[recipient] = sealed
            records.append(record)
        return outputs, records

    # -- endings -----------------------------------------------------------------------------

    def _refuse(
        self, files: JobFiles, keys: WorkerKeys, state: TrustedJobState, exc: Exception
    ) -> dict[str, Any]:
        code = error_code_of(exc)
        try:
            log = (
                state.log
                if "log" in state.done
                else RoomLog.verify(
                    state.manifest.room_id,
                    files.log_entries,
                    files.checkpoint,
                    state.attested_workers,
                )
            )
        except (LogError, InputError, AttestationError):
            return failure_document("E_LOG")
        return self._finish(
            files, keys, state, "refused", code, safe_message(exc), {}, [], None, log
        )

    def _finish(
        self,
        files: JobFiles,
        keys: WorkerKeys,
        state: TrustedJobState,
        status: str,
        code: str | None,
        message: str,
        outputs: dict[str, str],
        records: list[OutputRecord],
        privacy: PrivacyRecord | None,
        log: RoomLog,
        *,
        match: tuple[MatchRecord, ...] = (),
    ) -> dict[str, Any]:
        signer = keys.signer
        with self.timer.step("sign"):
            bundle_digest = files.bundle.digest()
            approvals = state.approvals.digests if "approvals" in state.done else ()
            inputs = state.input_records() if "budget" in state.done else ()
            placeholder = Checkpoint("", 0, "0" * 64, "1970-01-01T00:00:00Z")
            receipt = Receipt(
                room_id=state.manifest.room_id,
                manifest_digest=state.manifest_digest,
                run_id=files.run_id,
                bundle_digest=bundle_digest,
                approval_digests=approvals,
                inputs=inputs,
                outputs=tuple(records),
                privacy=privacy,
                attestation_digest=state.attestation_digest,
                attestation=state.attestation.provider,
                isolation=state.attestation.isolation,
                status=status,
                error_code=code,
                timings_ms={},
                log_index=0,
                checkpoint=placeholder,
                details={"message": message} if message else {},
                match=match,
            )
            kind = "run_refused" if status == "refused" else "run_finished"
            details: dict[str, Any] = {"status": status,
                                       "receipt_core": receipt_core_digest(receipt)}
            if match:  # what later runs over the same uploads release again (ledger)
                details[MATCH_INPUTS] = [i.upload for i in inputs]
                details["match"] = [m.to_dict() for m in match]
            if status == "succeeded" and self.one_row_checked:
                details[ONE_ROW_CHECKED] = sorted(self.one_row_checked)
            index = log.append(signer, kind, files.run_id, bundle_digest, details)
            checkpoint, checkpoint_envelope = log.checkpoint(signer)
            receipt = Receipt(
                **{
                    **receipt.__dict__,
                    "log_index": index,
                    "checkpoint": checkpoint,
                    "timings_ms": self.timer.whole_seconds(),
                }
            )
            receipt_envelope = sign_envelope(Receipt.KIND, receipt.to_dict(), [signer])
        return {
            "status": status,
            "error_code": code,
            "receipt": receipt_envelope.to_dict(),
            "checkpoint": checkpoint_envelope.to_dict(),
            "log_entries": [e.to_dict() for e in log.appended],
            "outputs": outputs,
        }
