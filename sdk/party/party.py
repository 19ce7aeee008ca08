"""The ``sealroom`` operations as a Python API for notebooks: ``sdk.Party`` and
``sdk.verify_receipt``.

Every call performs the same verifications as the matching CLI command (pinned manifest,
attestation before sealing, receipt and log checks against the last checkpoint stored in the
home folder) and returns values instead of printing. ``sdk.Client`` remains the raw,
unverified HTTP client.

    from sdk import Party
    brand = Party("brand", coordinator="http://127.0.0.1:8700", room="brand-x-publisher")
    brand.upload("customers.csv", dataset="customers")
    digest = brand.propose_template("overlap", {"left": "customers", "right": "visitors"},
                                    recipients=["brand", "publisher"])
    brand.approve(digest)
    result = brand.result(brand.run(digest)["run_id"])
    result.rows, result.meta, result.receipt.privacy
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdk.errors import error_for_code
from sdk.party.bundles import (
    PlanPrivacy,
    decide,
    load_bundle,
    parse_inputs,
    parse_params,
    plan_from_source,
    plan_output_for,
    resolve_inputs,
    template_inputs,
)
from sdk.party.data import next_version, seal_dataset, upload_sealed, worker_for
from sdk.party.events import OnEvent, ignore
from sdk.party.files import read_envelope_file, read_json_file
from sdk.party.home import Home
from sdk.party.preview import PreviewResult, preview_match
from sdk.party.receipts import ReceiptFile, verify_receipt_file
from sdk.party.results import (
    decode_result,
    decrypt_output,
    fetch_verified_receipt,
    raise_for_run,
    start_run,
    wait_for_run,
)
from sdk.party.review import risk_report
from sdk.party.session import Session
from sdk.party.statements import make_bundle
from sdk.party.trust import PinnedRoom, VerifiedLog, fetch_log, fetch_workers, load_room
from sdk.protocol.clock import utcnow
from sdk.protocol.models import BundleInput, Upload
from sdk.protocol.plan import Plan
from sdk.protocol.records import Receipt
from sdk.protocol.spec import OutputSpec
from sdk.protocol.templates import build_template
from sdk.protocol.verify import VerifiedReceipt, verify_bundle, verify_manifest


@dataclass(frozen=True)
class Result:
    """A decrypted, verified run result."""

    columns: list[str]
    rows: list[list[Any]]
    meta: dict[str, Any]
    receipt: Receipt
    receipt_file: ReceiptFile

    def to_arrow(self) -> Any:
        """The result as a ``pyarrow.Table`` (needs pyarrow)."""
        import pyarrow as pa

        return pa.table({c: [row[i] for row in self.rows] for i, c in enumerate(self.columns)})


class Party:
    """One party's view of one room, with this machine's home folder as its memory."""

    def __init__(self, name: str | None = None, *, key: str | Path | None = None,
                 home: str | Path = "~/.sealroom", coordinator: str | None = None,
                 room: str | None = None, on_event: OnEvent = ignore) -> None:
        self.session = Session(home=Home(Path(home).expanduser()), coordinator=coordinator,
                               key_path=None if key is None else str(key), party=name,
                               room=room, on_event=on_event)

    def close(self) -> None:
        """Close the HTTP connections."""
        self.session.close()

    def room(self) -> PinnedRoom:
        """The pinned manifest, verified (every party signed, not expired)."""
        return load_room(self.session)

    def pin(self, manifest_file: str | Path, *, replace: bool = False) -> PinnedRoom:
        """Verify a fully signed manifest file and pin its digest on this machine."""
        envelope = read_envelope_file(manifest_file, "manifest")
        manifest = verify_manifest(envelope, now=utcnow())
        self.session.home.pin_manifest(manifest.room_id, envelope, replace=replace)
        self.session.room = self.session.room or manifest.room_id
        return PinnedRoom(envelope, manifest, envelope.digest())

    def upload(self, path: str | Path, *, dataset: str, version: int | None = None,
               region: str | None = None, strict: bool = False) -> Upload:
        """Verify the worker's attestation, prepare, seal and upload a CSV/Parquet file
        (``region``: for phone numbers without ``+``; ``strict``: refuse the file at its first
        empty or invalid identifier instead of dropping such rows)."""
        room = self.room()
        worker = worker_for(self.session, room)
        if version is None:
            version = next_version(self.session, room, dataset)
        with tempfile.TemporaryDirectory(prefix="sealroom-sealed-") as tmp:
            statement, sealed = seal_dataset(self.session, room, worker, Path(path), dataset,
                                             version, Path(tmp) / "data.sealed",
                                             region=region, strict=strict)
            return upload_sealed(self.session, room, statement, sealed)

    def propose_template(self, template: str, params: dict[str, Any] | list[str], *,
                         recipients: list[str], title: str = "", purpose: str = "",
                         max_runs: int | None = None, follow_latest: Sequence[str] = ()) -> str:
        """Sign and submit a template bundle; returns its digest. Inputs are pinned to their
        newest complete uploads, except those in ``follow_latest``."""
        room = self.room()
        values = parse_params(params) if isinstance(params, list) else dict(params)
        inputs = resolve_inputs(self.session, room, template_inputs(room, values),
                                follow_latest=tuple(follow_latest))
        built = build_template(template, values)
        return self._propose(room, "template", built.code, built.output, inputs, recipients,
                             values, template, title or f"{template} template", purpose,
                             max_runs, built.plan)

    def propose_plan(self, query_file: str | Path, *, recipients: list[str],
                     privacy: PlanPrivacy | None = None, title: str = "", purpose: str = "",
                     max_runs: int | None = None, follow_latest: Sequence[str] = ()) -> str:
        """Sign and submit a plan bundle from a ``.sql``/``.py``/``.json`` file; returns its
        digest. Inputs are pinned to their newest complete uploads, except those in
        ``follow_latest``. Raises ``QueryRejectedError`` for what the plan language or the
        column roles refuse."""
        room = self.room()
        privacy = privacy or PlanPrivacy()
        path = Path(query_file)
        kind, source, plan = plan_from_source(room, path, privacy)
        inputs = resolve_inputs(self.session, room, list(plan.inputs),
                                follow_latest=tuple(follow_latest))
        return self._propose(room, kind, source, plan_output_for(plan, privacy),
                             inputs, recipients, {}, None, title or path.stem,
                             purpose, max_runs, plan)

    def propose(self, code_file: str | Path, output_spec_file: str | Path, *,
                inputs: list[str], recipients: list[str], params: dict[str, Any] | None = None,
                title: str = "", purpose: str = "", max_runs: int | None = None,
                follow_latest: Sequence[str] = ()) -> str:
        """Sign and submit whole-table custom code (a ``.py``/``.sql`` file with an output
        spec); returns its digest. ``inputs`` are ``DATASET`` or ``DATASET@VERSION``. It runs
        only where every input's owner allowed custom code, and its privacy depends on code
        review."""
        path = Path(code_file)
        kind = {".py": "python", ".sql": "sql"}[path.suffix.lower()]
        output = OutputSpec.from_dict(read_json_file(output_spec_file, "output spec"))
        room = self.room()
        versions = parse_inputs(list(inputs))
        pinned = resolve_inputs(self.session, room, list(versions), versions=versions,
                                follow_latest=tuple(follow_latest))
        return self._propose(room, kind, path.read_text(encoding="utf-8"), output,
                             pinned, recipients, dict(params or {}), None,
                             title or path.stem, purpose, max_runs)

    def _propose(self, room: PinnedRoom, kind: str, code: str, output: OutputSpec,
                 inputs: list[BundleInput], recipients: list[str],
                 params: dict[str, Any], template: str | None, title: str, purpose: str,
                 max_runs: int | None, plan: Plan | None = None) -> str:
        envelope = make_bundle(self.session.key(), room.manifest, room.digest,
                               sequence=int(time.time()), title=title, purpose=purpose,
                               kind=kind, code=code, output=output, inputs=inputs,
                               recipients=recipients, params=params, template=template,
                               max_runs=max_runs, plan=plan)
        verify_bundle(envelope, room.manifest, room.digest, now=utcnow())
        self.session.client().submit_bundle(room.room_id, envelope)
        return envelope.digest()

    def risks(self, bundle: str) -> list[str]:
        """The risk report of a bundle (verified against the manifest and the signed log)."""
        room = self.room()
        _envelope, parsed = load_bundle(self.session, room, bundle)
        return risk_report(room, parsed, self.log())

    def approve(self, bundle: str, reason: str = "", *, decision: str = "approve",
                follow_latest: bool = False) -> None:
        """Sign and send this party's approval (or ``decision="revoke"``) of a bundle;
        ``follow_latest`` agrees that its follow-latest inputs of this party's datasets read
        uploads made after the approval (required when there are any)."""
        room = self.room()
        envelope, parsed = load_bundle(self.session, room, bundle)
        decide(self.session, room, envelope, parsed, decision, reason=reason,
               follow_latest=follow_latest)

    def preview_match(self, path: str | Path, *, dataset: str, partner: str,
                      timeout: float = 3600.0) -> PreviewResult:
        """Preview how many ids of a local file ``partner``'s file has too (PSI cardinality,
        no worker; the partner runs the same at the same time): see
        :func:`sdk.party.preview.preview_match`."""
        return preview_match(self.session, self.room(), Path(path), dataset, partner,
                             timeout=timeout)

    def run(self, bundle: str, *, wait: bool = True, timeout: float = 900.0) -> dict[str, Any]:
        """Start a run and (by default) wait for its end; a refused or failed run raises the
        error of its code."""
        room = self.room()
        envelope, _bundle = load_bundle(self.session, room, bundle)
        run = start_run(self.session, room, envelope)
        if wait:
            run = wait_for_run(self.session, room, run, timeout=timeout)
        raise_for_run(run)
        return run

    def result(self, run_id: str) -> Result:
        """Fetch, verify (receipt, log inclusion, consistency), decrypt and decode a result."""
        room = self.room()
        rfile, verified = fetch_verified_receipt(self.session, room, run_id, with_output=True)
        receipt = verified.receipt
        if receipt.status != "succeeded":
            raise error_for_code(receipt.error_code or "E_INTERNAL",
                                 str(receipt.details.get("message") or receipt.status))
        columns, rows, meta = decode_result(decrypt_output(self.session, room, rfile, receipt))
        return Result(columns, rows, meta, receipt, rfile)

    def log(self) -> VerifiedLog:
        """The room log, verified and checked against the last checkpoint seen here."""
        room = self.room()
        workers, _ = fetch_workers(self.session, room)
        return fetch_log(self.session, room, workers)


def verify_receipt(receipt_file: str | Path, manifest_file: str | Path) -> VerifiedReceipt:
    """Verify a receipt file offline against a manifest file (what ``receipt verify`` does)."""
    envelope = read_envelope_file(manifest_file, "manifest")
    manifest = verify_manifest(envelope, now=utcnow())
    rfile = ReceiptFile.from_dict(read_json_file(receipt_file, "receipt file"))
    return verify_receipt_file(rfile, manifest, envelope.digest())
