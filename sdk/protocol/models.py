"""Payload models of the signed objects of DESIGN §4: manifest, attestation, upload, bundle,
approval.

Each model is frozen and typed, has ``to_dict``/``from_dict``, rejects unknown fields and uses
decimal strings instead of floats. ``KIND`` names the DSSE payload type. Receipts, checkpoints
and log entries live in :mod:`sdk.protocol.records`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from sdk.errors import AttestationError, InputError
from sdk.protocol.attestation import HARDWARE_PROVIDERS, REQUIRED_REGISTERS, EvidencePolicy
from sdk.protocol.attestation.claims import MAX_COLLATERAL_BYTES, MAX_EVIDENCE_BYTES
from sdk.protocol.canonical import canonical_json
from sdk.protocol.clock import check_time
from sdk.protocol.fields import (
    check_hex64,
    check_keys,
    check_name,
    expect_mapping,
    get_bool,
    get_choice,
    get_decimal,
    get_hex64,
    get_int,
    get_list,
    get_name,
    get_str,
    get_str_list,
)
from sdk.protocol.keys import PublicIdentity, encryption_key_from_hex, signing_key_from_hex
from sdk.protocol.plan import DatasetColumns, Plan
from sdk.protocol.spec import OutputSpec

ROLES = ("data_owner", "analyst", "recipient")
ID_KINDS = ("email", "phone", "sha256", "none")
#: why a row was dropped at seal time (``Upload.rejected``): no identifier, or one that does not
#: validate for the dataset's ``id_kind``
REJECT_REASONS = ("empty", "invalid_email", "invalid_phone", "invalid_sha256")
COLUMN_TYPES = ("string", "int", "float", "bool", "date")
PROVIDERS = ("simulated", "none", "aws-nitro", "amd-sev-snp", "intel-tdx")
ISOLATIONS = ("container", "none")
BUNDLE_KINDS = ("python", "sql", "template", "plan")
COLUMN_ROLES = ("dimension", "measure", "filter", "private")
"""Roles a data owner gives a non-id column (the id column's role is ``id``; a column without a
role is ``private``): see :mod:`sdk.protocol.plan`."""
DECISIONS = ("approve", "revoke")
REGISTER_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,23}")
HEX_VALUE = re.compile(r"(?:[0-9a-f]{2}){1,128}")
COLLATERAL_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


@dataclass(frozen=True)
class Party:
    """A party of the room: its public keys and roles."""

    identity: PublicIdentity
    roles: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.identity.name

    def to_dict(self) -> dict[str, Any]:
        return {**self.identity.to_dict(), "roles": list(self.roles)}

    @classmethod
    def from_dict(cls, data: object) -> Party:
        where = "manifest.parties[]"
        d = expect_mapping(data, where)
        check_keys(d, where, ["name", "signing_key", "encryption_key", "roles"])
        roles = get_str_list(d, "roles", where, max_items=len(ROLES))
        if any(r not in ROLES for r in roles) or len(set(roles)) != len(roles):
            raise InputError(f"{where}.roles: each of {list(ROLES)} at most once")
        identity = PublicIdentity.from_dict(
            {k: d[k] for k in ("name", "signing_key", "encryption_key")}, where
        )
        return cls(identity, roles)


@dataclass(frozen=True)
class Column:
    """A column of a dataset schema."""

    name: str
    type: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type}

    @classmethod
    def from_dict(cls, data: object) -> Column:
        where = "manifest.datasets[].schema[]"
        d = expect_mapping(data, where)
        check_keys(d, where, ["name", "type"])
        return cls(get_name(d, "name", where), get_choice(d, "type", where, COLUMN_TYPES))


@dataclass(frozen=True)
class Dataset:
    """A dataset the room accepts: owner, schema, identifier, privacy floor and budget, and
    the owner's column policy: a role per column (``roles``: column → one of
    :data:`COLUMN_ROLES`; absent means ``private``) and whether whole-table custom code may read
    it (``allow_custom_code``, off by default). Every party signs the manifest, so every party
    signs these too; ``roles`` and ``allow_custom_code`` are written only when not the default.
    """

    name: str
    owner: str
    schema: tuple[Column, ...]
    id_column: str
    id_kind: str
    min_group_size: int
    epsilon_budget: str
    delta_budget: str = "0"
    roles: tuple[tuple[str, str], ...] = ()
    allow_custom_code: bool = False

    def role(self, column: str) -> str:
        """The role of ``column``: ``id`` for the id column, else its declared role, else
        ``private``."""
        if column == self.id_column:
            return "id"
        return dict(self.roles).get(column, "private")

    def plan_columns(self) -> DatasetColumns:
        """What a query plan may know of this dataset (:func:`sdk.protocol.plan.validate`)."""
        return DatasetColumns(self.id_column, self.id_kind, dict(self.roles))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "owner": self.owner,
            "schema": [c.to_dict() for c in self.schema],
            "id_column": self.id_column,
            "id_kind": self.id_kind,
            "min_group_size": self.min_group_size,
            "epsilon_budget": self.epsilon_budget,
            "delta_budget": self.delta_budget,
        }
        if self.roles:
            out["roles"] = dict(self.roles)
        if self.allow_custom_code:
            out["allow_custom_code"] = True
        return out

    def schema_digest(self) -> str:
        """SHA-256 over the canonical schema: uploads bind it."""
        return hashlib.sha256(canonical_json([c.to_dict() for c in self.schema])).hexdigest()

    @classmethod
    def from_dict(cls, data: object) -> Dataset:
        where = "manifest.datasets[]"
        d = expect_mapping(data, where)
        check_keys(
            d,
            where,
            ["name", "owner", "schema", "id_column", "id_kind", "min_group_size", "epsilon_budget"],
            ["delta_budget", "roles", "allow_custom_code"],
        )
        schema = tuple(Column.from_dict(c) for c in get_list(d, "schema", where, max_items=512))
        names = [c.name for c in schema]
        if not schema or len(set(names)) != len(names):
            raise InputError(f"{where}.schema: needs distinct column names")
        id_column = get_name(d, "id_column", where)
        if id_column not in names:
            raise InputError(f"{where}.id_column: not a column of the schema")
        roles: list[tuple[str, str]] = []
        if "roles" in d:
            raw = expect_mapping(d["roles"], f"{where}.roles")
            for column, role in raw.items():
                if column not in names or column == id_column:
                    raise InputError(
                        f"{where}.roles: {str(column)[:60]!r} is not a non-id column of the schema"
                    )
                if role not in COLUMN_ROLES:
                    raise InputError(f"{where}.roles.{column}: one of {list(COLUMN_ROLES)}")
                roles.append((column, role))
        return cls(
            name=get_name(d, "name", where),
            owner=get_name(d, "owner", where),
            schema=schema,
            id_column=id_column,
            id_kind=get_choice(d, "id_kind", where, ID_KINDS),
            min_group_size=get_int(d, "min_group_size", where, minimum=1, maximum=10**9),
            epsilon_budget=get_decimal(d, "epsilon_budget", where, non_negative=True),
            delta_budget=get_decimal(d, "delta_budget", where, non_negative=True)
            if "delta_budget" in d
            else "0",
            roles=tuple(sorted(r for r in roles if r[1] != "private")),
            allow_custom_code=get_bool(d, "allow_custom_code", where)
            if "allow_custom_code" in d
            else False,
        )


@dataclass(frozen=True)
class Measurement:
    """What a worker runs: the image id (or ``unisolated``) and the digest of its code."""

    image_id: str
    code_digest: str

    def to_dict(self) -> dict[str, Any]:
        return {"image_id": self.image_id, "code_digest": self.code_digest}

    @classmethod
    def from_dict(cls, data: object, where: str = "measurement") -> Measurement:
        d = expect_mapping(data, where)
        check_keys(d, where, ["image_id", "code_digest"])
        return cls(get_str(d, "image_id", where, max_len=200), get_hex64(d, "code_digest", where))


@dataclass(frozen=True)
class HardwarePolicy:
    """What the parties require of one hardware provider's evidence: for each measurement
    register (as the provider reports it: ``PCR0``, ``MEASUREMENT``, ``MRTD``, ...), the
    accepted lowercase hex values. The registers a provider must pin are
    :data:`sdk.protocol.attestation.REQUIRED_REGISTERS`; debug mode is always refused."""

    provider: str
    registers: tuple[tuple[str, tuple[str, ...]], ...]

    def to_dict(self) -> dict[str, Any]:
        return {name: list(values) for name, values in self.registers}

    @classmethod
    def from_dict(cls, provider: str, data: object, where: str) -> HardwarePolicy:
        if provider not in HARDWARE_PROVIDERS:
            raise InputError(f"{where}: {provider[:32]!r} is not a hardware provider")
        d = expect_mapping(data, where)
        if len(d) > 32:
            raise InputError(f"{where}: at most 32 registers")
        registers = []
        for name in sorted(d):
            if not isinstance(name, str) or not REGISTER_NAME.fullmatch(name):
                raise InputError(f"{where}: register names are upper-case, like PCR0 or MRTD")
            values = get_str_list(d, name, where, max_items=16)
            if not values or any(not HEX_VALUE.fullmatch(v) for v in values):
                raise InputError(f"{where}.{name}: one or more lowercase hex values")
            registers.append((name, tuple(values)))
        missing = [r for r in REQUIRED_REGISTERS[provider] if r not in d]
        if missing:
            raise InputError(f"{where}: must pin {', '.join(missing)}")
        return cls(provider, tuple(registers))

    def evidence_policy(self, report_data: bytes | None) -> EvidencePolicy:
        """The verifier's policy: these registers, and the key binding ``report_data``."""
        return EvidencePolicy(measurements=dict(self.registers), report_data=report_data)


@dataclass(frozen=True)
class WorkerPolicy:
    """Which workers the parties accept."""

    measurements: tuple[Measurement, ...]
    providers: tuple[str, ...]
    platform_keys: tuple[bytes, ...]
    allow_unisolated: bool = False
    hardware: tuple[HardwarePolicy, ...] = ()

    def hardware_policy(self, provider: str) -> HardwarePolicy:
        """The policy for one hardware provider.

        Raises ``AttestationError`` when the manifest pins no measurement for it.
        """
        for policy in self.hardware:
            if policy.provider == provider:
                return policy
        raise AttestationError(f"attestation: the manifest pins no {provider} measurement")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "measurements": [m.to_dict() for m in self.measurements],
            "providers": list(self.providers),
            "platform_keys": [k.hex() for k in self.platform_keys],
            "allow_unisolated": self.allow_unisolated,
        }
        if self.hardware:  # written only when set: manifests without it keep their bytes
            out["hardware"] = {h.provider: h.to_dict() for h in self.hardware}
        return out

    @classmethod
    def from_dict(cls, data: object) -> WorkerPolicy:
        where = "manifest.workers"
        d = expect_mapping(data, where)
        check_keys(
            d,
            where,
            ["measurements", "providers", "platform_keys"],
            ["allow_unisolated", "hardware"],
        )
        providers = get_str_list(d, "providers", where, max_items=8)
        if not providers or any(p not in PROVIDERS for p in providers):
            raise InputError(f"{where}.providers: each one of {list(PROVIDERS)}")
        keys = tuple(
            signing_key_from_hex(k, f"{where}.platform_keys[]")
            for k in get_list(d, "platform_keys", where, max_items=16)
        )
        hardware_map = expect_mapping(d.get("hardware", {}), f"{where}.hardware")
        hardware = tuple(
            HardwarePolicy.from_dict(str(name), hardware_map[name], f"{where}.hardware.{name}")
            for name in sorted(hardware_map)
        )
        if d.get("hardware") == {}:
            raise InputError(f"{where}.hardware: omit it rather than leave it empty")
        for provider in providers:
            if provider in HARDWARE_PROVIDERS and provider not in hardware_map:
                raise InputError(f"{where}.hardware: {provider} is accepted but pins nothing")
        return cls(
            measurements=tuple(
                Measurement.from_dict(m, f"{where}.measurements[]")
                for m in get_list(d, "measurements", where, max_items=64)
            ),
            providers=providers,
            platform_keys=keys,
            allow_unisolated=get_bool(d, "allow_unisolated", where)
            if "allow_unisolated" in d
            else False,
            hardware=hardware,
        )


@dataclass(frozen=True)
class Manifest:
    """The room: every party signs it; nothing happens in a room before it is fully signed."""

    KIND: ClassVar[str] = "manifest"

    room_id: str
    version: int
    parties: tuple[Party, ...]
    datasets: tuple[Dataset, ...]
    workers: WorkerPolicy
    default_min_group_size: int
    default_max_runs: int
    expires: str

    def party(self, name: str) -> Party:
        """The party called ``name``. Raises ``InputError`` if there is none."""
        for party in self.parties:
            if party.name == name:
                return party
        raise InputError(f"manifest: no party named {name!r}")

    def dataset(self, name: str) -> Dataset:
        """The dataset called ``name``. Raises ``InputError`` if there is none."""
        for dataset in self.datasets:
            if dataset.name == name:
                return dataset
        raise InputError(f"manifest: no dataset named {name!r}")

    def signing_keys(self) -> dict[str, bytes]:
        """Party name → raw Ed25519 public key: the trusted set for party signatures."""
        return {p.name: p.identity.signing_key for p in self.parties}

    def to_dict(self) -> dict[str, Any]:
        return {
            "room_id": self.room_id,
            "version": self.version,
            "parties": [p.to_dict() for p in self.parties],
            "datasets": [d.to_dict() for d in self.datasets],
            "workers": self.workers.to_dict(),
            "policies": {
                "min_group_size": self.default_min_group_size,
                "max_runs": self.default_max_runs,
            },
            "expires": self.expires,
        }

    @classmethod
    def from_dict(cls, data: object) -> Manifest:
        where = "manifest"
        d = expect_mapping(data, where)
        check_keys(
            d,
            where,
            ["room_id", "version", "parties", "datasets", "workers", "policies", "expires"],
        )
        parties = tuple(Party.from_dict(p) for p in get_list(d, "parties", where, max_items=32))
        if len(parties) < 1:
            raise InputError(f"{where}.parties: at least one party")
        names = [p.name for p in parties]
        keys = [p.identity.signing_key for p in parties]
        enc = [p.identity.encryption_key for p in parties]
        if (
            len(set(names)) != len(names)
            or len(set(keys)) != len(keys)
            or len(set(enc)) != len(enc)
        ):
            raise InputError(f"{where}.parties: names and keys must be distinct")
        datasets = tuple(Dataset.from_dict(x) for x in get_list(d, "datasets", where, max_items=64))
        if len({x.name for x in datasets}) != len(datasets):
            raise InputError(f"{where}.datasets: names must be distinct")
        for dataset in datasets:
            if dataset.owner not in names:
                raise InputError(f"{where}.datasets: owner {dataset.owner!r} is not a party")
        policies = expect_mapping(d["policies"], f"{where}.policies")
        check_keys(policies, f"{where}.policies", ["min_group_size", "max_runs"])
        return cls(
            room_id=get_name(d, "room_id", where),
            version=get_int(d, "version", where, minimum=1),
            parties=parties,
            datasets=datasets,
            workers=WorkerPolicy.from_dict(d["workers"]),
            default_min_group_size=get_int(
                policies, "min_group_size", f"{where}.policies", minimum=1, maximum=10**9
            ),
            default_max_runs=get_int(policies, "max_runs", f"{where}.policies", minimum=1),
            expires=check_time(d["expires"], f"{where}.expires"),
        )


@dataclass(frozen=True)
class Attestation:
    """Binds a worker's keys to a measurement.

    With the ``simulated`` provider the operator's platform key signs this statement. With a
    hardware provider (``aws-nitro``, ``amd-sev-snp``, ``intel-tdx``) the worker signs it with
    the key it names, and ``evidence`` (with ``collateral``, the provider's certificates and
    signed status files) is the TEE's own report, whose report data must be
    :func:`sdk.protocol.attestation.key_binding` of the two keys. Both fields are written only
    for hardware providers.
    """

    KIND: ClassVar[str] = "attestation"

    provider: str
    isolation: str
    worker_signing_key: bytes
    worker_encryption_key: bytes
    measurement: Measurement
    issued_at: str
    evidence: bytes = b""
    collateral: tuple[tuple[str, bytes], ...] = ()

    @property
    def is_hardware(self) -> bool:
        return self.provider in HARDWARE_PROVIDERS

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "provider": self.provider,
            "isolation": self.isolation,
            "worker_signing_key": self.worker_signing_key.hex(),
            "worker_encryption_key": self.worker_encryption_key.hex(),
            "measurement": self.measurement.to_dict(),
            "issued_at": self.issued_at,
        }
        if self.is_hardware:
            out["evidence"] = base64.b64encode(self.evidence).decode()
            out["collateral"] = {n: base64.b64encode(v).decode() for n, v in self.collateral}
        return out

    @classmethod
    def from_dict(cls, data: object) -> Attestation:
        where = "attestation"
        d = expect_mapping(data, where)
        required = [
            "provider",
            "isolation",
            "worker_signing_key",
            "worker_encryption_key",
            "measurement",
            "issued_at",
        ]
        provider = get_choice(d, "provider", where, PROVIDERS)
        hardware = provider in HARDWARE_PROVIDERS
        check_keys(d, where, required + (["evidence", "collateral"] if hardware else []))
        evidence: bytes = b""
        collateral: tuple[tuple[str, bytes], ...] = ()
        if hardware:
            evidence = _b64(d["evidence"], f"{where}.evidence", MAX_EVIDENCE_BYTES)
            files = expect_mapping(d["collateral"], f"{where}.collateral")
            if len(files) > 8:
                raise InputError(f"{where}.collateral: at most 8 files")
            collateral = tuple(
                (_collateral_name(n, where), _b64(v, f"{where}.collateral", MAX_COLLATERAL_BYTES))
                for n, v in sorted(files.items())
            )
        return cls(
            provider=provider,
            isolation=get_choice(d, "isolation", where, ISOLATIONS),
            worker_signing_key=signing_key_from_hex(
                d["worker_signing_key"], f"{where}.worker_signing_key"
            ),
            worker_encryption_key=encryption_key_from_hex(
                d["worker_encryption_key"], f"{where}.worker_encryption_key"
            ),
            measurement=Measurement.from_dict(d["measurement"], f"{where}.measurement"),
            issued_at=check_time(d["issued_at"], f"{where}.issued_at"),
            evidence=evidence,
            collateral=collateral,
        )


def _collateral_name(name: object, where: str) -> str:
    if not isinstance(name, str) or not COLLATERAL_NAME.fullmatch(name):
        raise InputError(f"{where}.collateral: file names like vcek or collateral.json")
    return name


def _b64(value: object, where: str, max_bytes: int) -> bytes:
    """Standard base64 of at most ``max_bytes`` decoded bytes, checked before decoding."""
    if not isinstance(value, str) or len(value) > (max_bytes + 2) // 3 * 4:
        raise InputError(f"{where}: base64 of at most {max_bytes} bytes")
    try:
        return base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise InputError(f"{where}: not base64") from exc


@dataclass(frozen=True)
class Upload:
    """A party's statement about one sealed dataset version; travels beside the ciphertext,
    and its binding fields are repeated in the authenticated sealed-file header.

    ``rejected`` counts the rows the owner's SDK dropped at seal time, per reason of
    :data:`REJECT_REASONS` (``row_count`` is what was kept); written only when something was
    dropped, so statements without drops keep their bytes.

    ``one_row_per_person``: the owner's SDK found every identifier once (no person has two
    rows). Written only when true. The worker checks it before a plan reads the file, once per
    upload (the log keeps the result), and a plan then needs no per-person bounding for it.
    """

    KIND: ClassVar[str] = "upload"

    room_id: str
    manifest_digest: str
    dataset: str
    version: int
    schema_digest: str
    row_count: int
    ciphertext_digest: str
    ciphertext_size: int
    key_commitment: str
    attestation_digest: str
    created_at: str
    rejected: tuple[tuple[str, int], ...] = ()
    one_row_per_person: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "room_id": self.room_id,
            "manifest_digest": self.manifest_digest,
            "dataset": self.dataset,
            "version": self.version,
            "schema_digest": self.schema_digest,
            "row_count": self.row_count,
            "ciphertext_digest": self.ciphertext_digest,
            "ciphertext_size": self.ciphertext_size,
            "key_commitment": self.key_commitment,
            "attestation_digest": self.attestation_digest,
            "created_at": self.created_at,
        }
        if self.rejected:
            out["rejected"] = dict(self.rejected)
        if self.one_row_per_person:
            out["one_row_per_person"] = True
        return out

    @classmethod
    def from_dict(cls, data: object) -> Upload:
        where = "upload"
        d = expect_mapping(data, where)
        optional = ["rejected", "one_row_per_person"]
        check_keys(d, where, [f.name for f in fields(cls) if f.name not in optional], optional)
        if "one_row_per_person" in d and d["one_row_per_person"] is not True:
            # written only when true: one encoding only
            raise InputError(f"{where}.one_row_per_person: omit it rather than set it false")
        rejected: list[tuple[str, int]] = []
        if "rejected" in d:
            raw = expect_mapping(d["rejected"], f"{where}.rejected")
            for reason in raw:
                if reason not in REJECT_REASONS:
                    raise InputError(
                        f"{where}.rejected: {str(reason)[:60]!r} is not one of {list(REJECT_REASONS)}"
                    )
                rejected.append((reason, get_int(raw, reason, f"{where}.rejected", minimum=1)))
            if not rejected:  # written only when something was dropped: one encoding only
                raise InputError(f"{where}.rejected: omit it rather than leave it empty")
        return cls(
            room_id=get_name(d, "room_id", where),
            manifest_digest=get_hex64(d, "manifest_digest", where),
            dataset=get_name(d, "dataset", where),
            version=get_int(d, "version", where, minimum=1),
            schema_digest=get_hex64(d, "schema_digest", where),
            row_count=get_int(d, "row_count", where),
            ciphertext_digest=get_hex64(d, "ciphertext_digest", where),
            ciphertext_size=get_int(d, "ciphertext_size", where),
            key_commitment=get_hex64(d, "key_commitment", where),
            attestation_digest=get_hex64(d, "attestation_digest", where),
            created_at=check_time(d["created_at"], f"{where}.created_at"),
            rejected=tuple(sorted(rejected)),
            one_row_per_person="one_row_per_person" in d,
        )


@dataclass(frozen=True)
class BundleInput:
    """A dataset a bundle reads: one exact upload, or (a standing bundle) whatever is newest.

    Pinned (the default): ``version`` and ``upload``, the digest of that version's signed
    upload statement, so every approval of the bundle binds the data it reads and a new upload
    never changes it. ``follow_latest``: the newest complete upload at run time; the dataset's
    owner must say so in its approval (:func:`sdk.protocol.approvals.check_follow_latest`).
    """

    dataset: str
    version: int | None = None
    upload: str | None = None
    follow_latest: bool = False

    def __post_init__(self) -> None:
        if self.follow_latest != (self.version is None) or (self.upload is None) != (
            self.version is None
        ):
            raise InputError(f"bundle.inputs[{self.dataset!r}]: either a version and its "
                             "upload digest, or follow_latest")

    @property
    def pinned(self) -> bool:
        return not self.follow_latest

    def to_dict(self) -> dict[str, Any]:
        if self.follow_latest:
            return {"dataset": self.dataset, "version": "latest", "follow_latest": True}
        return {"dataset": self.dataset, "version": self.version, "upload": self.upload}

    @classmethod
    def from_dict(cls, data: object) -> BundleInput:
        where = "bundle.inputs[]"
        d = expect_mapping(data, where)
        name = get_name(d, "dataset", where)
        if d.get("version") == "latest":
            check_keys(d, where, ["dataset", "version", "follow_latest"])
            if d["follow_latest"] is not True:
                raise InputError(f"{where}: version 'latest' needs follow_latest: true")
            return cls(name, follow_latest=True)
        check_keys(d, where, ["dataset", "version", "upload"])
        return cls(name, get_int(d, "version", where, minimum=1),
                   get_hex64(d, "upload", where))


@dataclass(frozen=True)
class Bundle:
    """A query bundle: code, inputs, what may be released and to whom."""

    KIND: ClassVar[str] = "bundle"
    MAX_CODE = 256 * 1024

    room_id: str
    manifest_digest: str
    sequence: int
    author: str
    title: str
    purpose: str
    kind: str
    code: str
    template: str | None
    params: dict[str, Any]
    inputs: tuple[BundleInput, ...]
    output: OutputSpec
    recipients: tuple[str, ...]
    max_runs: int
    not_before: str
    expires: str
    plan: Plan | None = None

    @property
    def datasets(self) -> tuple[str, ...]:
        return tuple(i.dataset for i in self.inputs)

    @property
    def custom_code(self) -> bool:
        """True for whole-table custom code (no plan): it runs only where every input's owner
        allowed it, and its privacy depends on code review."""
        return self.plan is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "room_id": self.room_id,
            "manifest_digest": self.manifest_digest,
            "sequence": self.sequence,
            "author": self.author,
            "title": self.title,
            "purpose": self.purpose,
            "kind": self.kind,
            "code": self.code,
            "template": self.template,
            "params": dict(self.params),
            "inputs": [i.to_dict() for i in self.inputs],
            "output": self.output.to_dict(),
            "recipients": list(self.recipients),
            "max_runs": self.max_runs,
            "not_before": self.not_before,
            "expires": self.expires,
            **({} if self.plan is None else {"plan": self.plan.to_dict()}),
        }

    @classmethod
    def from_dict(cls, data: object) -> Bundle:
        where = "bundle"
        d = expect_mapping(data, where)
        check_keys(d, where, [f.name for f in fields(cls) if f.name != "plan"], ["plan"])
        params = expect_mapping(d["params"], f"{where}.params")
        for key, value in params.items():
            check_name(key, f"{where}.params key")
            if isinstance(value, float) or not isinstance(
                value, str | int | bool | list | type(None)
            ):
                raise InputError(f"{where}.params.{key}: strings, integers, booleans or lists only")
        inputs = tuple(BundleInput.from_dict(i) for i in get_list(d, "inputs", where, max_items=16))
        if not inputs or len({i.dataset for i in inputs}) != len(inputs):
            raise InputError(f"{where}.inputs: at least one, each dataset once")
        recipients = get_str_list(d, "recipients", where, max_items=32)
        if not recipients or len(set(recipients)) != len(recipients):
            raise InputError(f"{where}.recipients: at least one, each once")
        template = d.get("template")
        if template is not None:
            template = check_name(template, f"{where}.template")
        return cls(
            room_id=get_name(d, "room_id", where),
            manifest_digest=get_hex64(d, "manifest_digest", where),
            sequence=get_int(d, "sequence", where, minimum=1),
            author=get_name(d, "author", where),
            title=get_str(d, "title", where, max_len=200),
            purpose=get_str(d, "purpose", where, max_len=2000),
            kind=get_choice(d, "kind", where, BUNDLE_KINDS),
            code=get_str(d, "code", where, max_len=cls.MAX_CODE),
            template=template,
            params=dict(params),
            inputs=inputs,
            output=OutputSpec.from_dict(d["output"]),
            recipients=tuple(check_name(r, f"{where}.recipients[]") for r in recipients),
            max_runs=get_int(d, "max_runs", where, minimum=1, maximum=10**6),
            not_before=check_time(d["not_before"], f"{where}.not_before"),
            expires=check_time(d["expires"], f"{where}.expires"),
            plan=Plan.from_dict(d["plan"]) if "plan" in d else None,
        )


@dataclass(frozen=True)
class Approval:
    """A party's decision on one exact bundle digest in one exact manifest.

    ``follow_latest`` names the bundle's ``follow_latest`` inputs this party owns and agrees
    may read uploads made after the approval; written only when non-empty.
    """

    KIND: ClassVar[str] = "approval"

    room_id: str
    manifest_digest: str
    bundle_digest: str
    party: str
    decision: str
    reason: str
    issued_at: str
    expires: str
    follow_latest: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "room_id": self.room_id,
            "manifest_digest": self.manifest_digest,
            "bundle_digest": self.bundle_digest,
            "party": self.party,
            "decision": self.decision,
            "reason": self.reason,
            "issued_at": self.issued_at,
            "expires": self.expires,
        }
        if self.follow_latest:
            out["follow_latest"] = list(self.follow_latest)
        return out

    @classmethod
    def from_dict(cls, data: object) -> Approval:
        where = "approval"
        d = expect_mapping(data, where)
        check_keys(d, where, [f.name for f in fields(cls) if f.name != "follow_latest"],
                   ["follow_latest"])
        follow: tuple[str, ...] = ()
        if "follow_latest" in d:
            names = get_str_list(d, "follow_latest", where, max_items=16)
            follow = tuple(check_name(n, f"{where}.follow_latest[]") for n in names)
            if not follow or list(follow) != sorted(set(follow)):
                raise InputError(f"{where}.follow_latest: sorted, each once, or omitted")
            if d["decision"] != "approve":
                raise InputError(f"{where}.follow_latest: only in an approval")
        return cls(
            room_id=get_name(d, "room_id", where),
            manifest_digest=check_hex64(d["manifest_digest"], f"{where}.manifest_digest"),
            bundle_digest=check_hex64(d["bundle_digest"], f"{where}.bundle_digest"),
            party=get_name(d, "party", where),
            decision=get_choice(d, "decision", where, DECISIONS),
            reason=get_str(d, "reason", where, max_len=2000),
            issued_at=check_time(d["issued_at"], f"{where}.issued_at"),
            expires=check_time(d["expires"], f"{where}.expires"),
            follow_latest=follow,
        )
