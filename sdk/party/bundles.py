"""Bundles from a party's side: template bundles generated from parameters, bundles loaded
and verified against the pinned manifest, and approvals or revocations signed and sent.

Plans come from a ``.sql`` file (:mod:`sdk.protocol.sqlplan`), Python builder code
(:mod:`sdk.party.pyplan`) or plan JSON; templates are plans too (:mod:`sdk.protocol.templates`,
pure: the worker regenerates and compares). Whole-table custom code is the explicit exception.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sdk.errors import ConfigError, InputError, SignatureError, quote_user
from sdk.party.files import read_envelope_file
from sdk.party.session import Session
from sdk.party.statements import make_approval
from sdk.party.trust import PinnedRoom
from sdk.protocol import templates
from sdk.protocol.clock import utcnow
from sdk.protocol.dsse import Envelope
from sdk.protocol.models import Bundle, BundleInput, Upload
from sdk.protocol.plan import Plan, validate
from sdk.protocol.spec import OutputSpec
from sdk.protocol.verify import verify_bundle, verify_upload

TEMPLATE_NAMES = tuple(templates.TEMPLATES)
_DECIMAL_PARAM = re.compile(r"(epsilon|delta|lower|upper)")


@dataclass(frozen=True)
class PlanPrivacy:
    """The privacy parameters an author chooses for a plan bundle (the rest of the output spec
    is implied by the plan)."""

    epsilon: str | None = None
    delta: str | None = None
    min_group_size: int | None = None
    max_contributions: int = 1
    domains: dict[str, tuple[str, ...]] = field(default_factory=dict)
    max_groups: int = 10_000


def parse_domains(specs: list[str]) -> dict[str, tuple[str, ...]]:
    """``NAME=a,b,c`` public domains of group keys."""
    out: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        if not sep or not name:
            raise InputError(f"--domain {spec[:60]!r}: expected NAME=VALUE,VALUE,...")
        out[name] = tuple(v.strip() for v in values.split(",") if v.strip())
    return out


def plan_from_source(room: PinnedRoom, path: Path, privacy: PlanPrivacy) -> tuple[str, str, Plan]:
    """(kind, source, plan) of a ``.sql`` (one SELECT in the plan grammar), ``.py`` (builder
    code assigning ``plan``) or ``.json`` (a plan) file.

    Raises ``QueryRejectedError`` naming the construct and its position for what the plan
    language cannot express, or a column read outside its role; ``InputError`` otherwise.
    """
    from sdk.protocol.admission import plan_columns

    suffix = path.suffix.lower()
    if suffix not in (".sql", ".py", ".json"):
        raise InputError("a plan comes from a .sql, .py or .json file")
    source = path.read_text(encoding="utf-8")
    columns = plan_columns(room.manifest)
    if suffix == ".sql":
        from sdk.protocol.sqlplan import plan_from_sql

        plan = plan_from_sql(source, columns, max_contributions=privacy.max_contributions,
                             domains=privacy.domains)
        kind = "sql"
    elif suffix == ".py":
        from sdk.party.pyplan import plan_from_python

        plan = _with_privacy(plan_from_python(source), privacy)
        kind = "python"
    else:
        from sdk.protocol.canonical import parse_json

        plan = _with_privacy(Plan.from_dict(parse_json(source.encode("utf-8"))), privacy)
        kind, source = "plan", ""
    validate(plan, columns)
    return kind, source, plan


def _with_privacy(plan: Plan, privacy: PlanPrivacy) -> Plan:
    """Domains given on the command line fill in groups that have none."""
    groups = tuple(replace(g, domain=privacy.domains.get(g.name, g.domain))
                   for g in plan.group_by)
    contributions = privacy.max_contributions if privacy.max_contributions != 1 \
        else plan.max_contributions
    return replace(plan, group_by=groups, max_contributions=contributions)


def plan_output_for(plan: Plan, privacy: PlanPrivacy) -> OutputSpec:
    """The output spec a plan implies, with the author's privacy parameters."""
    from sdk.protocol.planoutput import plan_output
    from sdk.protocol.spec import DPSpec

    dp = None
    if privacy.epsilon is not None:
        dp = DPSpec.from_dict({"epsilon": privacy.epsilon, "delta": privacy.delta or "0"})
    elif privacy.delta is not None:
        raise InputError("--delta needs --epsilon")
    like = OutputSpec(mode=plan.release, privacy_unit="person", dp=dp,
                      min_group_size=privacy.min_group_size, max_groups=privacy.max_groups)
    return plan_output(plan, like)


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``k=v`` pairs: integers for whole numbers (except epsilon/delta/bounds, kept as decimal
    strings), lists for comma-separated ``[a,b]`` or JSON after ``k:=``."""
    params: dict[str, Any] = {}
    for pair in pairs:
        if ":=" in pair:
            key, raw = pair.split(":=", 1)
            try:
                params[key] = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise InputError(f"--param {key}: invalid JSON") from exc
            continue
        if "=" not in pair:
            raise InputError(f"--param {pair!r}: expected KEY=VALUE")
        key, value = pair.split("=", 1)
        if value.startswith("[") and value.endswith("]"):
            params[key] = [v.strip() for v in value[1:-1].split(",") if v.strip()]
        elif value.isdigit() and not _DECIMAL_PARAM.search(key):
            params[key] = int(value)
        elif value in ("true", "false"):
            params[key] = value == "true"
        else:
            params[key] = value
    return params


def template_inputs(room: PinnedRoom, params: dict[str, Any]) -> list[str]:
    """The datasets a template's parameters name, in order; fills in each one's id column
    parameter from the manifest when it is not given."""
    inputs: list[str] = []
    for key, id_key in templates.DATASET_PARAMS.items():
        name = params.get(key)
        if isinstance(name, str):
            dataset = room.manifest.dataset(name)
            params.setdefault(id_key, dataset.id_column)
            inputs.append(name)
    return inputs


def parse_inputs(specs: list[str]) -> dict[str, int | None]:
    """``DATASET`` (its newest complete upload) or ``DATASET@VERSION`` specifications, in
    order: dataset → version (None: the newest)."""
    out: dict[str, int | None] = {}
    for spec in specs:
        name, _, version = spec.partition("@")
        if "@" in spec and not version.isdigit():
            raise InputError(f"--input {quote_user(spec)}: expected DATASET@VERSION")
        if name in out:
            raise InputError(f"--input {quote_user(name)}: named twice")
        out[name] = int(version) if version else None
    return out


def resolve_inputs(session: Session, room: PinnedRoom, names: list[str], *,
                   versions: dict[str, int | None] | None = None,
                   follow_latest: list[str] | tuple[str, ...] = (),
                   statements: list[Envelope] | tuple[Envelope, ...] = ()) -> list[BundleInput]:
    """Pin every input to one exact upload: ``versions[name]`` or the newest complete one, by
    the digest of its owner-signed upload statement (verified here against the manifest), so
    an approval binds the data a run reads. Inputs in ``follow_latest`` instead read the
    newest upload at run time, which their owner must agree to when approving. Upload
    ``statements`` given here (``OUT.upload.json`` files from ``data seal``) pin their datasets
    without asking the coordinator, so a bundle can be written offline.

    Raises ``InputError`` (an unknown name, no complete upload, or no such version; the
    message says what to do) and the coordinator's errors.
    """
    versions = dict(versions or {})
    unknown = [n for n in [*versions, *follow_latest] if n not in names]
    if unknown:
        raise InputError(f"{quote_user(unknown[0])} is not an input of this bundle "
                         f"(inputs: {', '.join(names)})")
    both = set(follow_latest) & {n for n, v in versions.items() if v is not None}
    if both:
        raise InputError(f"{quote_user(sorted(both)[0])}: either a version or --follow-latest")
    pinned = [n for n in names if n not in follow_latest]
    found: dict[str, list[tuple[Upload, str]]] = {}
    for envelope in statements:
        upload = verify_upload(envelope, room.manifest, room.digest)
        found.setdefault(upload.dataset, []).append((upload, envelope.digest()))
    if any(n not in found for n in pinned):
        for info in session.client().uploads(room.room_id):
            if not isinstance(info, dict) or info.get("dataset") not in pinned \
                    or info.get("dataset") in found or info.get("complete") is not True:
                continue
            envelope = Envelope.from_dict(info.get("statement"))
            upload = verify_upload(envelope, room.manifest, room.digest)
            found.setdefault(upload.dataset, []).append((upload, envelope.digest()))
    out: list[BundleInput] = []
    for name in names:
        room.manifest.dataset(name)
        if name in follow_latest:
            out.append(BundleInput(name, follow_latest=True))
            continue
        options = found.get(name, [])
        wanted = versions.get(name)
        if wanted is not None:
            options = [o for o in options if o[0].version == wanted]
        if not options:
            which = f"version {wanted} of {name!r}" if wanted else f"upload of {name!r}"
            raise InputError(f"no complete {which} yet: upload it first, or give "
                             f"--follow-latest {name} for a standing bundle")
        upload, digest = max(options, key=lambda o: o[0].version)
        out.append(BundleInput(name, upload.version, digest))
    return out


def load_bundle(session: Session, room: PinnedRoom, ref: str) -> tuple[Envelope, Bundle]:
    """A bundle by file or by digest (fetched from the coordinator), verified against the
    pinned manifest and admitted by its column policies (a template bundle must be exactly
    what its template generates; the worker checks all of it again before running)."""
    if Path(ref).is_file():
        envelope = read_envelope_file(ref, "bundle")
    elif re.fullmatch(r"[0-9a-f]{6,64}", ref):
        envelope = session.client().bundle(room.room_id, ref)
        if not envelope.digest().startswith(ref):  # the coordinator answered another bundle
            raise SignatureError(f"the coordinator sent bundle {envelope.digest()[:12]} "
                                 f"for {ref[:12]}")
    else:
        raise InputError(f"{ref!r} is neither a bundle file nor a bundle digest")
    bundle = verify_bundle(envelope, room.manifest, room.digest, now=utcnow())
    return envelope, bundle




def own_follow_latest(room: PinnedRoom, bundle: Bundle, party: str) -> list[str]:
    """The bundle's ``follow_latest`` inputs owned by ``party``: what its approval must agree
    to by name."""
    return [i.dataset for i in bundle.inputs
            if i.follow_latest and room.manifest.dataset(i.dataset).owner == party]


def decide(session: Session, room: PinnedRoom, bundle: Envelope, parsed: Bundle,
           decision: str, *, reason: str = "", valid_days: int | None = None,
           follow_latest: bool = False) -> Envelope:
    """Sign this party's ``approve`` or ``revoke`` of the exact bundle digest and send it
    (``parsed`` is that bundle, as :func:`load_bundle` verified it).

    A bundle with ``follow_latest`` inputs of this party's datasets is approved only with
    ``follow_latest=True``: the approval then names them, agreeing that runs read uploads made
    after it. Returns the signed statement. Raises ``InputError`` (such inputs without
    ``follow_latest``, or ``follow_latest`` without any), ``ConfigError`` when this key is not the one the
    manifest lists for the party, and the coordinator's errors.
    """
    key = session.key()
    if room.manifest.party(key.name).identity.signing_key != key.signer.public_key:
        raise ConfigError(f"this key is not the key the manifest lists for {key.name}")
    extra: dict[str, Any] = {} if valid_days is None else {"valid_days": valid_days}
    following: list[str] = []
    if decision == "approve":
        following = own_follow_latest(room, parsed, key.name)
        if following and not follow_latest:
            raise InputError(f"this bundle reads every new upload of {', '.join(following)} "
                             "(yours): approve with --follow-latest to agree")
        if follow_latest and not following:
            raise InputError("--follow-latest: this bundle reads no dataset of yours that way")
    approval = make_approval(key, room.manifest, room.digest, bundle.digest(),
                             decision=decision, reason=reason, follow_latest=following, **extra)
    client = session.client()
    if decision == "approve":
        client.submit_approval(room.room_id, approval)
    else:
        client.submit_revocation(room.room_id, approval)
    return approval
