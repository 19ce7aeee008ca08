"""Payload models of what the worker signs: receipts, checkpoints and log entries (DESIGN §4, §7)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any, ClassVar

from sdk.errors import InputError
from sdk.protocol.clock import check_time
from sdk.protocol.fields import (
    check_decimal,
    check_hex64,
    check_keys,
    check_name,
    expect_mapping,
    get_bool,
    get_choice,
    get_hex64,
    get_int,
    get_list,
    get_name,
    get_str,
)

RUN_STATUSES = ("succeeded", "refused", "failed")
GUARANTEES = ("by construction", "depends on code review")
LOG_KINDS = (
    "manifest_accepted",
    "upload_consumed",
    "bundle_approved",
    "run_started",
    "budget_charged",
    "run_finished",
    "run_refused",
)


def log_origin(room_id: str) -> str:
    """The origin string of a room's log: what every checkpoint of that room names."""
    return f"sealroom/{room_id}/log"


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement of the room log's size and root."""

    KIND: ClassVar[str] = "checkpoint"

    origin: str
    tree_size: int
    root_hash: str
    issued_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash,
            "issued_at": self.issued_at,
        }

    @classmethod
    def from_dict(cls, data: object) -> Checkpoint:
        where = "checkpoint"
        d = expect_mapping(data, where)
        check_keys(d, where, [f.name for f in fields(cls)])
        return cls(
            origin=get_str(d, "origin", where, max_len=200),
            tree_size=get_int(d, "tree_size", where),
            root_hash=get_hex64(d, "root_hash", where),
            issued_at=check_time(d["issued_at"], f"{where}.issued_at"),
        )


def _check_details(value: object, where: str, depth: int = 0) -> Any:
    """Details are JSON without floats: strings, ints, bools, null, lists and objects."""
    if depth > 6:
        raise InputError(f"{where}: nested too deeply")
    if isinstance(value, float):
        raise InputError(f"{where}: floats are not allowed; use decimal strings")
    if isinstance(value, Mapping):
        return {
            check_name(k, f"{where} key"): _check_details(v, where, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_check_details(v, where, depth + 1) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    raise InputError(f"{where}: unsupported value")


@dataclass(frozen=True)
class LogEntry:
    """One entry of the room log; ``details`` depends on ``kind``."""

    KIND: ClassVar[str] = "logentry"

    room_id: str
    kind: str
    run_id: str
    subject: str
    details: dict[str, Any]
    time: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "room_id": self.room_id,
            "kind": self.kind,
            "run_id": self.run_id,
            "subject": self.subject,
            "details": self.details,
            "time": self.time,
        }

    @classmethod
    def from_dict(cls, data: object) -> LogEntry:
        where = "logentry"
        d = expect_mapping(data, where)
        check_keys(d, where, [f.name for f in fields(cls)])
        subject = get_str(d, "subject", where, max_len=64)
        if subject:
            check_hex64(subject, f"{where}.subject")
        return cls(
            room_id=get_name(d, "room_id", where),
            kind=get_choice(d, "kind", where, LOG_KINDS),
            run_id=get_str(d, "run_id", where, max_len=64),
            subject=subject,
            details=_check_details(
                expect_mapping(d["details"], f"{where}.details"), f"{where}.details"
            ),
            time=check_time(d["time"], f"{where}.time"),
        )


@dataclass(frozen=True)
class InputRecord:
    """One input a run read: the upload statement (by digest), its version and signed row
    count, and whether the bundle followed the newest upload rather than pinning it."""

    dataset: str
    version: int
    row_count: int
    upload: str
    follow_latest: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "version": self.version,
            "row_count": self.row_count,
            "upload": self.upload,
            "follow_latest": self.follow_latest,
        }

    @classmethod
    def from_dict(cls, data: object) -> InputRecord:
        where = "receipt.inputs[]"
        d = expect_mapping(data, where)
        check_keys(d, where, [f.name for f in fields(cls)])
        return cls(
            dataset=get_name(d, "dataset", where),
            version=get_int(d, "version", where, minimum=1),
            row_count=get_int(d, "row_count", where),
            upload=get_hex64(d, "upload", where),
            follow_latest=get_bool(d, "follow_latest", where),
        )


@dataclass(frozen=True)
class MatchRecord:
    """The measured match rate of one input of a run that joins: that dataset's persons found
    in every other input, divided by its persons. Released by the platform under the run's
    own minimum group size and, when the run declares DP, with noise (``rate`` is None when
    withheld)."""

    dataset: str
    party: str
    rate: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "party": self.party, "rate": self.rate}

    @classmethod
    def from_dict(cls, data: object) -> MatchRecord:
        where = "receipt.match[]"
        d = expect_mapping(data, where)
        check_keys(d, where, [f.name for f in fields(cls)])
        rate = d["rate"]
        if rate is not None:
            rate = check_decimal(rate, f"{where}.rate", non_negative=True)
            if Decimal(rate) > 1:
                raise InputError(f"{where}.rate: between 0 and 1")
        return cls(get_name(d, "dataset", where), get_name(d, "party", where), rate)


@dataclass(frozen=True)
class OutputRecord:
    """One sealed output: to whom, and the digests of its plaintext and ciphertext."""

    recipient: str
    plaintext_digest: str
    ciphertext_digest: str
    rows: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipient": self.recipient,
            "plaintext_digest": self.plaintext_digest,
            "ciphertext_digest": self.ciphertext_digest,
            "rows": self.rows,
        }

    @classmethod
    def from_dict(cls, data: object) -> OutputRecord:
        where = "receipt.outputs[]"
        d = expect_mapping(data, where)
        check_keys(d, where, [f.name for f in fields(cls)])
        return cls(
            recipient=get_name(d, "recipient", where),
            plaintext_digest=get_hex64(d, "plaintext_digest", where),
            ciphertext_digest=get_hex64(d, "ciphertext_digest", where),
            rows=get_int(d, "rows", where),
        )


@dataclass(frozen=True)
class PrivacyRecord:
    """What privacy the platform applied to one run. It carries no exact data-dependent figure
    (no count of suppressed groups): ``guarantee`` says what the run's privacy rests on,
    ``by construction`` (a plan) or ``depends on code review`` (custom code)."""

    mode: str
    min_group_size: int
    guarantee: str
    epsilon_charged: str
    delta_charged: str
    budget_left: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "min_group_size": self.min_group_size,
            "guarantee": self.guarantee,
            "epsilon_charged": self.epsilon_charged,
            "delta_charged": self.delta_charged,
            "budget_left": dict(self.budget_left),
        }

    @classmethod
    def from_dict(cls, data: object) -> PrivacyRecord:
        where = "receipt.privacy"
        d = expect_mapping(data, where)
        check_keys(d, where, [f.name for f in fields(cls)])
        left = expect_mapping(d["budget_left"], f"{where}.budget_left")
        return cls(
            mode=get_str(d, "mode", where, max_len=32),
            min_group_size=get_int(d, "min_group_size", where),
            guarantee=get_choice(d, "guarantee", where, GUARANTEES),
            epsilon_charged=check_decimal(d["epsilon_charged"], f"{where}.epsilon_charged"),
            delta_charged=check_decimal(d["delta_charged"], f"{where}.delta_charged"),
            budget_left={
                check_name(k, f"{where}.budget_left key"): check_decimal(v, f"{where}.budget_left")
                for k, v in left.items()
            },
        )


@dataclass(frozen=True)
class Receipt:
    """The worker's signed account of one run, success or refusal."""

    KIND: ClassVar[str] = "receipt"

    room_id: str
    manifest_digest: str
    run_id: str
    bundle_digest: str
    approval_digests: tuple[str, ...]
    inputs: tuple[InputRecord, ...]
    outputs: tuple[OutputRecord, ...]
    privacy: PrivacyRecord | None
    attestation_digest: str
    attestation: str
    isolation: str
    status: str
    error_code: str | None
    timings_ms: dict[str, int]
    log_index: int
    checkpoint: Checkpoint
    details: dict[str, Any] = field(default_factory=dict)
    match: tuple[MatchRecord, ...] = ()

    @property
    def input_digests(self) -> tuple[str, ...]:
        """The digests of the upload statements the run read."""
        return tuple(i.upload for i in self.inputs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "room_id": self.room_id,
            "manifest_digest": self.manifest_digest,
            "run_id": self.run_id,
            "bundle_digest": self.bundle_digest,
            "approval_digests": list(self.approval_digests),
            "inputs": [i.to_dict() for i in self.inputs],
            "match": [m.to_dict() for m in self.match],
            "outputs": [o.to_dict() for o in self.outputs],
            "privacy": None if self.privacy is None else self.privacy.to_dict(),
            "attestation_digest": self.attestation_digest,
            "attestation": self.attestation,
            "isolation": self.isolation,
            "status": self.status,
            "error_code": self.error_code,
            "timings_ms": dict(self.timings_ms),
            "log_index": self.log_index,
            "checkpoint": self.checkpoint.to_dict(),
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, data: object) -> Receipt:
        where = "receipt"
        d = expect_mapping(data, where)
        check_keys(d, where, [f.name for f in fields(cls)])
        timings = expect_mapping(d["timings_ms"], f"{where}.timings_ms")
        error_code = d.get("error_code")
        if error_code is not None and (
            not isinstance(error_code, str) or not error_code.startswith("E_")
        ):
            raise InputError(f"{where}.error_code: expected an E_ code")
        return cls(
            room_id=get_name(d, "room_id", where),
            manifest_digest=get_hex64(d, "manifest_digest", where),
            run_id=get_str(d, "run_id", where, max_len=64),
            bundle_digest=get_hex64(d, "bundle_digest", where),
            approval_digests=tuple(
                check_hex64(x, f"{where}.approval_digests[]")
                for x in get_list(d, "approval_digests", where, max_items=64)
            ),
            inputs=tuple(
                InputRecord.from_dict(x) for x in get_list(d, "inputs", where, max_items=64)
            ),
            match=tuple(
                MatchRecord.from_dict(x) for x in get_list(d, "match", where, max_items=64)
            ),
            outputs=tuple(
                OutputRecord.from_dict(o) for o in get_list(d, "outputs", where, max_items=64)
            ),
            privacy=None if d["privacy"] is None else PrivacyRecord.from_dict(d["privacy"]),
            attestation_digest=get_hex64(d, "attestation_digest", where),
            attestation=get_str(d, "attestation", where, max_len=32),
            isolation=get_str(d, "isolation", where, max_len=32),
            status=get_choice(d, "status", where, RUN_STATUSES),
            error_code=error_code,
            timings_ms={
                check_name(k, f"{where}.timings_ms key"): get_int(timings, k, f"{where}.timings_ms")
                for k in timings
            },
            log_index=get_int(d, "log_index", where),
            checkpoint=Checkpoint.from_dict(d["checkpoint"]),
            details=_check_details(
                expect_mapping(d["details"], f"{where}.details"), f"{where}.details"
            ),
        )
