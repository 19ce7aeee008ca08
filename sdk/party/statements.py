"""Building and signing the statements a party makes: manifests, uploads, bundles, approvals.

These are the safe recipes over the protocol core that the CLI and notebooks use.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sdk.errors import InputError
from sdk.protocol.clock import format_time, utcnow
from sdk.protocol.dsse import Envelope, add_signature, sign_envelope
from sdk.protocol.keys import PartyKey, PublicIdentity
from sdk.protocol.models import (
    Approval,
    Attestation,
    Bundle,
    BundleInput,
    Column,
    Dataset,
    HardwarePolicy,
    Manifest,
    Measurement,
    Party,
    Upload,
    WorkerPolicy,
)
from sdk.protocol.plan import Plan
from sdk.protocol.policy import DEFAULT_MIN_GROUP_SIZE
from sdk.protocol.sealing import SealResult
from sdk.protocol.spec import OutputSpec

MAX_ROOM_FILE_BYTES = 1024 * 1024


def _in(days: int, start: datetime) -> str:
    return format_time(start + timedelta(days=days))


def manifest_from_room_file(
    text: str,
    identities: Mapping[str, PublicIdentity],
    *,
    measurements: Sequence[Measurement] = (),
    platform_keys: Sequence[bytes] = (),
    now: datetime | None = None,
) -> Manifest:
    """Build a manifest from a declarative room file (TOML; see the README's room reference).

    ``identities`` gives each party's public keys by name (from their key files); extra
    worker measurements and platform keys may be added to those the file lists. A room file
    without ``expires`` expires a year after ``now`` (default: the clock).

    Raises:
        InputError: invalid TOML, unknown party, or any invalid field.
    """
    if len(text.encode()) > MAX_ROOM_FILE_BYTES:
        raise InputError("room file: too large")
    try:
        room = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"room file: invalid TOML ({exc})") from exc
    try:
        parties = []
        for p in room["parties"]:
            identity = identities.get(p["name"])
            if identity is None:
                raise InputError(f"room file: no key given for party {p['name']!r}")
            parties.append(
                Party(identity, tuple(p.get("roles", ["data_owner", "analyst", "recipient"])))
            )
        datasets = [
            Dataset(
                name=d["name"],
                owner=d["owner"],
                schema=tuple(Column(c, t) for c, t in d["schema"].items()),
                id_column=d["id_column"],
                id_kind=d.get("id_kind", "sha256"),
                min_group_size=int(d.get("min_group_size", room.get("min_group_size", DEFAULT_MIN_GROUP_SIZE))),
                epsilon_budget=str(d.get("epsilon_budget", "10")),
                delta_budget=str(d.get("delta_budget", "0.000001")),
                roles=tuple(sorted((str(c), str(r)) for c, r in d.get("roles", {}).items()
                                   if r != "private")),
                allow_custom_code=_flag(d.get("allow_custom_code", False),
                                        "allow_custom_code"),
            )
            for d in room["datasets"]
        ]
        workers = room.get("workers", {})
        all_measurements = [
            Measurement(m["image_id"], m["code_digest"]) for m in workers.get("measurements", [])
        ] + list(measurements)
        all_platform = [bytes.fromhex(k) for k in workers.get("platform_keys", [])] + list(
            platform_keys
        )
        manifest_dict = Manifest(
            room_id=room["room_id"],
            version=int(room.get("version", 1)),
            parties=tuple(parties),
            datasets=tuple(datasets),
            workers=WorkerPolicy(
                measurements=tuple(all_measurements),
                providers=tuple(workers.get("providers", ["simulated"])),
                platform_keys=tuple(all_platform),
                allow_unisolated=bool(workers.get("allow_unisolated", False)),
                hardware=tuple(
                    HardwarePolicy.from_dict(str(name), registers, f"room file: workers.hardware.{name}")
                    for name, registers in sorted(workers.get("hardware", {}).items())
                ),
            ),
            default_min_group_size=int(room.get("min_group_size", DEFAULT_MIN_GROUP_SIZE)),
            default_max_runs=int(room.get("max_runs", 100)),
            expires=room.get("expires", _in(365, now or utcnow())),
        ).to_dict()
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"room file: missing or invalid field ({exc})") from exc
    return Manifest.from_dict(manifest_dict)  # full validation


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"room file: {name} must be true or false")
    return value


def sign_manifest(manifest: Manifest | Envelope, key: PartyKey) -> Envelope:
    """Sign a manifest (a new envelope, or one more signature on an existing one)."""
    if isinstance(manifest, Envelope):
        return add_signature(manifest, key.signer)
    return sign_envelope(Manifest.KIND, manifest.to_dict(), [key.signer])


def make_upload(
    key: PartyKey,
    manifest: Manifest,
    manifest_digest: str,
    dataset: str,
    version: int,
    row_count: int,
    sealed: SealResult,
    attestation_digest: str,
    *,
    now: datetime | None = None,
    rejected: dict[str, int] | None = None,
    one_row_per_person: bool = False,
) -> Envelope:
    """The owner's signed upload statement for a sealed file, created ``now`` (default: the
    clock); ``rejected`` counts the rows dropped at seal time, per reason;
    ``one_row_per_person`` says no identifier occurs twice (the worker checks it)."""
    upload = Upload(
        room_id=manifest.room_id,
        manifest_digest=manifest_digest,
        dataset=dataset,
        version=version,
        schema_digest=manifest.dataset(dataset).schema_digest(),
        row_count=row_count,
        ciphertext_digest=sealed.ciphertext_digest,
        ciphertext_size=sealed.ciphertext_size,
        key_commitment=sealed.key_commitment,
        attestation_digest=attestation_digest,
        created_at=format_time(now or utcnow()),
        rejected=tuple(sorted((r, n) for r, n in (rejected or {}).items() if n)),
        one_row_per_person=one_row_per_person,
    )
    return sign_envelope(Upload.KIND, upload.to_dict(), [key.signer])


def make_bundle(
    key: PartyKey,
    manifest: Manifest,
    manifest_digest: str,
    *,
    sequence: int,
    title: str,
    purpose: str,
    kind: str,
    code: str,
    output: OutputSpec,
    inputs: Sequence[BundleInput],
    recipients: Sequence[str],
    params: Mapping[str, Any] | None = None,
    template: str | None = None,
    max_runs: int | None = None,
    valid_days: int = 30,
    now: datetime | None = None,
    plan: Plan | None = None,
) -> Envelope:
    """A signed query bundle authored by ``key``'s party, valid from five minutes before
    ``now`` (default: the clock) for ``valid_days``; ``plan`` makes it a plan bundle."""
    start = (now or utcnow()) - timedelta(minutes=5)
    bundle = Bundle(
        room_id=manifest.room_id,
        manifest_digest=manifest_digest,
        sequence=sequence,
        author=key.name,
        title=title,
        purpose=purpose,
        kind=kind,
        code=code,
        template=template,
        params=dict(params or {}),
        inputs=tuple(inputs),
        output=output,
        recipients=tuple(recipients),
        max_runs=max_runs or manifest.default_max_runs,
        not_before=format_time(start),
        expires=_in(valid_days, start),
        plan=plan,
    )
    return sign_envelope(Bundle.KIND, Bundle.from_dict(bundle.to_dict()).to_dict(), [key.signer])


def make_approval(
    key: PartyKey,
    manifest: Manifest,
    manifest_digest: str,
    bundle_digest: str,
    *,
    decision: str = "approve",
    reason: str = "",
    valid_days: int = 30,
    now: datetime | None = None,
    follow_latest: Sequence[str] = (),
) -> Envelope:
    """A party's signed approval (or revocation) of one exact bundle digest, issued just
    before ``now`` (default: the clock) for ``valid_days``; ``follow_latest`` names the
    bundle's follow-latest inputs of this party that may read uploads made after it."""
    issued = (now or utcnow()) - timedelta(seconds=5)
    approval = Approval(
        room_id=manifest.room_id,
        manifest_digest=manifest_digest,
        bundle_digest=bundle_digest,
        party=key.name,
        decision=decision,
        reason=reason,
        issued_at=format_time(issued),
        expires=_in(valid_days, issued),
        follow_latest=tuple(sorted(set(follow_latest))),
    )
    return sign_envelope(Approval.KIND, Approval.from_dict(approval.to_dict()).to_dict(),
                         [key.signer])


def attestation_of(envelope: Envelope) -> Attestation:
    """Parse an attestation's payload WITHOUT verifying it (display only; verify with
    :func:`sdk.protocol.verify.verify_attestation` before relying on it)."""
    from sdk.protocol.canonical import parse_json

    return Attestation.from_dict(parse_json(envelope.payload))


__all__ = [
    "attestation_of",
    "make_approval",
    "make_bundle",
    "make_upload",
    "manifest_from_room_file",
    "sign_manifest",
]
