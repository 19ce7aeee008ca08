"""Bundles from a party's side: template bundles generated from parameters, bundles loaded
and verified against the pinned manifest, and approvals or revocations signed and sent.

Template generation is :mod:`sdk.protocol.templates` (pure: no pandas, DuckDB or OpenDP), the
same code the worker uses to regenerate and compare.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from sdk.errors import ConfigError, InputError
from sdk.party.files import read_envelope_file
from sdk.party.session import Session
from sdk.party.statements import make_approval
from sdk.party.trust import PinnedRoom
from sdk.protocol import templates
from sdk.protocol.clock import utcnow
from sdk.protocol.dsse import Envelope
from sdk.protocol.models import Bundle
from sdk.protocol.spec import OutputSpec
from sdk.protocol.verify import verify_bundle

TEMPLATE_NAMES = tuple(templates.TEMPLATES)
_DECIMAL_PARAM = re.compile(r"(epsilon|delta|lower|upper)")


def build_template(name: str, params: dict[str, Any]) -> tuple[str, str, OutputSpec]:
    """(kind, code, output spec) that template ``name`` generates from ``params``.

    Raises ``InputError`` for an unknown template or bad parameters.
    """
    built = templates.build(name, params)
    return built.kind, built.code, built.output


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


def parse_inputs(specs: list[str]) -> list[str | tuple[str, int]]:
    """``DATASET`` (latest) or ``DATASET@VERSION`` (pinned) input specifications."""
    out: list[str | tuple[str, int]] = []
    for spec in specs:
        if "@" in spec:
            name, version = spec.split("@", 1)
            if not version.isdigit():
                raise InputError(f"--input {spec}: expected DATASET@VERSION")
            out.append((name, int(version)))
        else:
            out.append(spec)
    return out


def load_bundle(session: Session, room: PinnedRoom, ref: str, *, check_template: bool = True
                ) -> tuple[Envelope, Bundle]:
    """A bundle by file or by digest (fetched from the coordinator), verified against the
    pinned manifest; with ``check_template`` (reviews and approvals), a template bundle must
    be exactly what its template generates (the worker checks this again before running)."""
    if Path(ref).is_file():
        envelope = read_envelope_file(ref, "bundle")
    elif re.fullmatch(r"[0-9a-f]{6,64}", ref):
        envelope = session.client().bundle(room.room_id, ref)
    else:
        raise InputError(f"{ref!r} is neither a bundle file nor a bundle digest")
    bundle = verify_bundle(envelope, room.manifest, room.digest, now=utcnow())
    if check_template and bundle.template is not None:
        _kind, code, output = build_template(bundle.template, dict(bundle.params))
        if code != bundle.code or output != bundle.output:
            raise InputError(
                f"bundle: code or output spec differ from what template {bundle.template!r} "
                "generates from its parameters"
            )
    return envelope, bundle




def decide(session: Session, room: PinnedRoom, bundle: Envelope, decision: str, *,
           reason: str = "", valid_days: int | None = None) -> Envelope:
    """Sign this party's ``approve`` or ``revoke`` of the exact bundle digest and send it.

    Returns the signed statement. Raises ``ConfigError`` when this key is not the one the
    manifest lists for the party, and the coordinator's errors.
    """
    key = session.key()
    if room.manifest.party(key.name).identity.signing_key != key.signer.public_key:
        raise ConfigError(f"this key is not the key the manifest lists for {key.name}")
    extra: dict[str, Any] = {} if valid_days is None else {"valid_days": valid_days}
    approval = make_approval(key, room.manifest, room.digest, bundle.digest(),
                             decision=decision, reason=reason, **extra)
    client = session.client()
    if decision == "approve":
        client.submit_approval(room.room_id, approval)
    else:
        client.submit_revocation(room.room_id, approval)
    return approval
