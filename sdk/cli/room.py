"""``sealroom room``: the room manifest every party signs (DESIGN §4, §5 step 1).

* ``room new ROOM.toml`` builds the manifest from the declarative room file; each party's
  public keys come from ``.pub`` files (``public_key = "brand.pub"`` in the room file, relative to
  it, ``--identity FILE``, or ``HOME/keys/NAME.pub``). It writes an unsigned envelope.
* ``room sign FILE`` adds this party's signature (only if this key is the party's key in the
  manifest) and pins the manifest digest on this machine; ``room sign --room R`` does the same
  with the copy the coordinator holds (the room's, or the pending manifest of that id that
  lists this party; ``--digest D`` chooses one of several) and sends the signature back.
* ``room invitations`` lists the pending manifests that list this party: who they invite and
  who has signed (a room id is reserved only once every listed party has signed).
* ``room verify FILE`` (or ``--room R``) checks every party's signature and pins the digest.
* ``room submit FILE`` sends a manifest to the coordinator.
* ``room status`` prints the coordinator's per-room metrics next to what this machine verified
  itself from the log (epsilon spent and left per dataset).
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from typing import Any

from sdk.cli.context import Context, short
from sdk.errors import InputError, SealroomError, SignatureError
from sdk.party.files import read_envelope_file, write_json_file
from sdk.party.identities import load_identity
from sdk.party.statements import manifest_from_room_file
from sdk.party.trust import PinnedRoom, fetch_log, fetch_workers, load_room
from sdk.protocol.canonical import canonical_json, parse_json
from sdk.protocol.clock import utcnow
from sdk.protocol.dsse import Envelope, add_signature, payload_type, verify_signatures
from sdk.protocol.keys import PublicIdentity
from sdk.protocol.models import Manifest
from sdk.protocol.verify import verify_manifest


def unverified_manifest(envelope: Envelope) -> Manifest:
    """Parse a manifest envelope's payload for display and signing (signatures not checked)."""
    if envelope.payload_type != payload_type(Manifest.KIND):
        raise InputError("not a manifest envelope")
    return Manifest.from_dict(parse_json(envelope.payload))


def signature_status(envelope: Envelope, manifest: Manifest) -> tuple[list[str], list[str]]:
    """(parties that signed, parties still missing)."""
    result = verify_signatures(envelope, manifest.signing_keys(), 1)
    signed = [p.name for p in manifest.parties if p.name in result.signed]
    missing = [p.name for p in manifest.parties if p.name not in result.signed]
    return signed, missing


def describe_manifest(ctx: Context, envelope: Envelope, manifest: Manifest) -> None:
    """Print what a party agrees to when it signs."""
    signed, missing = signature_status(envelope, manifest)
    ctx.say(f"room      {manifest.room_id} (version {manifest.version}), expires {manifest.expires}")
    ctx.say(f"digest    {envelope.digest()}")
    ctx.table(
        ["party", "keyid", "roles", "signed"],
        [
            (p.name, short(p.identity.keyid), ",".join(p.roles), "yes" if p.name in signed else "no")
            for p in manifest.parties
        ],
    )
    ctx.table(
        ["dataset", "owner", "id (kind)", "min group", "epsilon budget", "custom code",
         "columns (type, role)"],
        [
            (
                d.name,
                d.owner,
                f"{d.id_column} ({d.id_kind})",
                d.min_group_size,
                d.epsilon_budget,
                "ALLOWED (privacy depends on code review)" if d.allow_custom_code else "refused",
                ", ".join(f"{c.name}:{c.type}:{d.role(c.name)}" for c in d.schema),
            )
            for d in manifest.datasets
        ],
    )
    w = manifest.workers
    ctx.say(
        f"workers   providers {', '.join(w.providers)}; {len(w.measurements)} measurement(s); "
        f"{len(w.platform_keys)} platform key(s); unisolated "
        f"{'ALLOWED (development only)' if w.allow_unisolated else 'refused'}"
    )
    for m in w.measurements:
        ctx.say(f"          image {m.image_id[:71]}  code {short(m.code_digest)}")
    for h in w.hardware:
        pinned = ", ".join(f"{name} {short(values[0])}" + (f" (+{len(values) - 1})" if len(values) > 1 else "")
                           for name, values in h.registers)
        ctx.say(f"          {h.provider}: {pinned}; debug refused")
    if missing:
        ctx.say(f"missing signatures: {', '.join(missing)}")


def _identities(room_file: Path, text: str, extra: list[str], ctx: Context) -> dict[str, PublicIdentity]:
    try:
        room = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"room file: invalid TOML ({exc})") from exc
    given = {i.name: i for i in (load_identity(p) for p in extra)}
    identities: dict[str, PublicIdentity] = {}
    for party in room.get("parties", []):
        name = party.get("name") if isinstance(party, dict) else None
        if not isinstance(name, str):
            raise InputError("room file: every [[parties]] needs a name")
        if name in given:
            identities[name] = given[name]
            continue
        ref = party.get("public_key")
        path = (room_file.parent / ref) if isinstance(ref, str) else ctx.home.root / "keys" / f"{name}.pub"
        identity = load_identity(path)
        if identity.name != name:
            raise InputError(f"room file: {path.name} is the key of {identity.name!r}, not {name!r}")
        identities[name] = identity
    return identities


def cmd_new(ctx: Context, args: argparse.Namespace) -> int:
    """Build the manifest from a room file; write it unsigned."""
    room_file = Path(args.room_file).expanduser()
    if not room_file.is_file():
        raise InputError(f"room file {room_file} does not exist")
    text = room_file.read_text(encoding="utf-8")
    manifest = manifest_from_room_file(text, _identities(room_file, text, args.identity or [], ctx))
    envelope = Envelope(payload_type(Manifest.KIND), canonical_json(manifest.to_dict()), ())
    out = Path(args.out) if args.out else room_file.with_name(f"{manifest.room_id}.manifest.json")
    write_json_file(out, envelope.to_dict())
    describe_manifest(ctx, envelope, manifest)
    ctx.say(f"wrote {out}; each party now runs: sealroom room sign {out}")
    return 0


def _sign(ctx: Context, envelope: Envelope) -> tuple[Envelope, Manifest]:
    manifest = unverified_manifest(envelope)
    key = ctx.key()
    party = manifest.party(key.name)
    if party.identity.signing_key != key.signer.public_key:
        raise SignatureError(f"this key is not the key the manifest lists for {key.name}")
    return add_signature(envelope, key.signer), manifest


def cmd_sign(ctx: Context, args: argparse.Namespace) -> int:
    """Sign the manifest as this party and pin its digest on this machine."""
    if args.file:
        envelope, manifest = _sign(ctx, read_envelope_file(args.file, "manifest"))
        write_json_file(args.out or args.file, envelope.to_dict())
    else:
        room_id = ctx.room_id(args.room)
        remote = ctx.client().manifest(room_id, digest=args.digest)
        if args.digest and remote.digest() != args.digest:
            raise SignatureError(f"the coordinator sent manifest {short(remote.digest())}, "
                                 f"not {short(args.digest)}")
        envelope, manifest = _sign(ctx, remote)
        envelope = ctx.client().add_manifest_signature(room_id, envelope)
    ctx.home.pin_manifest(manifest.room_id, envelope, replace=args.replace)
    describe_manifest(ctx, envelope, manifest)
    ctx.say(f"signed as {ctx.key().name}; pinned {short(envelope.digest())} for room {manifest.room_id}")
    return 0


def cmd_verify(ctx: Context, args: argparse.Namespace) -> int:
    """Verify every party's signature on a manifest and pin its digest."""
    if args.file:
        envelope = read_envelope_file(args.file, "manifest")
    else:
        envelope = ctx.client().manifest(ctx.room_id(args.room))
    manifest = verify_manifest(envelope, now=utcnow())
    changed = ctx.home.pin_manifest(manifest.room_id, envelope, replace=args.replace)
    describe_manifest(ctx, envelope, manifest)
    if args.out:
        ctx.say(f"wrote {write_json_file(args.out, envelope.to_dict())}")
    ctx.say(
        f"verified: signed by all {len(manifest.parties)} parties; "
        f"{'pinned' if changed else 'matches the pinned'} digest {short(envelope.digest())}"
    )
    return 0


def cmd_submit(ctx: Context, args: argparse.Namespace) -> int:
    """Send a (partly or fully) signed manifest to the coordinator."""
    envelope = read_envelope_file(args.file, "manifest")
    manifest = unverified_manifest(envelope)
    signed, missing = signature_status(envelope, manifest)
    if not signed:
        raise SignatureError("the manifest carries no party signature yet")
    ctx.client().submit_manifest(envelope)
    state = "complete" if not missing else f"waiting for {', '.join(missing)}"
    ctx.say(f"submitted room {manifest.room_id} ({short(envelope.digest())}); signatures {state}")
    return 0


def cmd_invitations(ctx: Context, args: argparse.Namespace) -> int:
    """The pending manifests that list this party, and who has signed each."""
    rows = ctx.client().invitations()
    if not rows:
        ctx.say("no pending manifest lists this key")
        return 0
    ctx.table(
        ["room", "digest", "signed", "missing", "submitted by", "expires"],
        [(str(i["room_id"]), short(str(i["manifest_digest"])),
          ", ".join(f"{p['name']} ({short(str(p['keyid']))})" for p in i["parties"] if p["signed"]),
          ", ".join(i["missing"]) or "-", str(i["submitted_by"]), str(i["expires_at"]))
         for i in rows],
    )
    ctx.say("review one with: sealroom room sign --room ROOM [--digest DIGEST] "
            "(it prints what it signs); check each party's key id out of band")
    return 0


def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, v in enumerate(value):
            _flatten(f"{prefix}[{i}]", v, out)
    else:
        out.append((prefix, "-" if value is None else str(value)))


def _section(status: dict[str, Any], name: str) -> dict[str, Any]:
    value = status.pop(name, None)
    return value if isinstance(value, dict) else {}


def _seconds(value: Any) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:.2f}"


def _bytes(size: Any) -> str:
    if not isinstance(size, int | float):
        return "- bytes"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size:.0f} bytes"


def _rate(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


def _history(points: object) -> str:
    """The last few measured rates, oldest first (``-``: withheld)."""
    if not isinstance(points, list):
        return "-"
    return " ".join(_rate(p.get("rate")) for p in points[-5:] if isinstance(p, dict))


def _reported(ctx: Context, raw: dict[str, Any]) -> None:
    """The coordinator's figures as tables (whatever it sends beyond them, flattened)."""
    status = dict(raw)
    status.pop("room_id", None)
    queries, turnaround = _section(status, "queries"), _section(status, "turnaround")
    privacy, utility = _section(status, "privacy"), _section(status, "utility")
    uploads = _section(status, "uploads")
    raw_rates = status.pop("match_rates", [])
    rates = [m for m in raw_rates if isinstance(m, dict)] if isinstance(raw_rates, list) else []
    log = privacy.pop("log", {}) if isinstance(privacy.get("log"), dict) else {}
    datasets = privacy.pop("datasets", [])
    missing = status.pop("missing_signatures", [])
    complete = status.pop("complete", None)
    size = uploads.get("bytes")
    ctx.table(["what", "reported"], [
        ("manifest", str(status.pop("manifest_digest", "-"))),
        ("signatures", "complete" if complete else f"missing: {', '.join(map(str, missing)) or '?'}"),
        ("uploads", f"{uploads.get('statements', '-')} statements, {uploads.get('complete', '-')} "
                    f"complete, {_bytes(size)}"),
        ("log", f"{log.get('size', '-')} entries, checkpoint {log.get('checkpoint_size', '-')}, "
                f"complete {'yes' if log.get('verified_complete') else 'no'}"),
        ("default min group", str(privacy.pop("default_min_group_size", "-"))),
    ])
    ctx.say("")
    by_state = queries.get("by_state") if isinstance(queries.get("by_state"), dict) else {}
    assert isinstance(by_state, dict)
    states = sorted(by_state)
    ctx.table(["runs", "last 7 days", *states],
              [(queries.get("runs_total", "-"), queries.get("runs_last_7d", "-"),
                *(by_state[k] for k in states))])
    ctx.say("")
    ctx.table(["turnaround: runs", "median s", "p95 s", "max s"],
              [(turnaround.get("count", "-"), _seconds(turnaround.get("median_s")),
                _seconds(turnaround.get("p95_s")), _seconds(turnaround.get("max_s")))])
    ctx.say("")
    share = utility.get("share_changed")
    ctx.table(["feedback", "changed a decision", "share"],
              [(utility.get("feedback", "-"), utility.get("changed_decision", "-"),
                "-" if share is None else f"{share:.0%}")])
    ctx.say("")
    if rates:
        ctx.table(["match rate of", "owner", "against", "runs", "withheld", "latest", "mean",
                   "recent"],
                  [(m.get("dataset"), m.get("party"), ", ".join(map(str, m.get("partners") or [])),
                    m.get("runs"), m.get("withheld"), _rate(m.get("latest")),
                    _rate(m.get("mean")), _history(m.get("history")))
                   for m in rates])
    else:
        ctx.say("match rate: no run has joined yet (the worker measures it in every join)")
    if isinstance(datasets, list) and datasets:
        ctx.say("")
        ctx.table(["dataset (reported)", "owner", "epsilon budget", "spent", "left",
                   "delta spent"],
                  [(d.get("dataset"), d.get("owner"), d.get("epsilon_budget"),
                    d.get("epsilon_spent"), d.get("epsilon_left"), d.get("delta_spent"))
                   for d in datasets if isinstance(d, dict)])
    rest: list[tuple[str, str]] = []
    queries_rest = {k: v for k, v in queries.items()
                    if k not in ("runs_total", "runs_last_7d", "by_state")}
    for name, section in (("queries", queries_rest), ("privacy", privacy), ("", status)):
        if section:
            _flatten(name, section, rest)
    if rest:
        ctx.say("")
        ctx.table(["other metric", "value"], rest)


def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    """Per-room metrics from the coordinator, and the privacy posture verified locally."""
    room = load_room(ctx, args.room)
    workers, rejected = fetch_workers(ctx, room)
    log = fetch_log(ctx, room, workers)
    status = ctx.client().room_status(room.room_id)
    ctx.say(f"room {room.room_id} — reported by the coordinator (not verified here)")
    _reported(ctx, status if isinstance(status, dict) else {})
    ctx.say("")
    ctx.say("verified on this machine from the signed log")
    ctx.table(
        ["dataset", "epsilon budget", "spent", "left", "min group", "queries"],
        [
            (d.name, d.epsilon_budget, str(log.spent(d.name)), str(log.left(d)),
             d.min_group_size,
             "plans, and CUSTOM CODE (privacy depends on code review)" if d.allow_custom_code
             else "plans only (privacy by construction)")
            for d in room.manifest.datasets
        ],
    )
    size = 0 if log.checkpoint is None else log.checkpoint.tree_size
    ctx.say(f"log: {size} entries, every entry signed by an attested worker, consistent with "
            f"{'the last checkpoint seen here' if log.previous else 'nothing seen before'}")
    ctx.say(f"workers: {len(workers)} attested" + (f"; rejected: {'; '.join(rejected)}" if rejected else ""))
    _uploads(ctx, room)
    return 0


def _uploads(ctx: Context, room: PinnedRoom) -> None:
    """Each upload's statement, verified here (signed by the dataset's owner): its rows and
    what its owner's SDK dropped at seal time."""
    from sdk.party.data import dropped_line
    from sdk.protocol.verify import verify_upload

    rows = []
    for info in ctx.client().uploads(room.room_id):
        if not isinstance(info, dict) or not isinstance(info.get("statement"), dict):
            continue
        try:
            upload = verify_upload(Envelope.from_dict(info["statement"]), room.manifest,
                                   room.digest)
        except SealroomError as exc:
            rows.append((str(info.get("dataset", "?"))[:60], "?", "-",
                         f"statement NOT verified ({exc.code})"))
            continue
        rows.append((upload.dataset, str(upload.version), str(upload.row_count),
                     dropped_line(upload.rejected) if upload.rejected else "none dropped"))
    ctx.say("")
    if not rows:
        ctx.say("uploads: none yet")
        return
    ctx.say("uploads (statements verified on this machine; drops counted by their owner's SDK)")
    ctx.table(["dataset", "version", "rows", "at seal time"], rows)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``room`` commands."""
    room = sub.add_parser("room", help="the room manifest every party signs")
    rsub = room.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    new = rsub.add_parser("new", parents=[common], help="build an unsigned manifest from a room file (TOML)")
    new.add_argument("room_file")
    new.add_argument("--identity", action="append", help="a party's .pub file (repeatable)")
    new.add_argument("-o", "--out", help="manifest file (default ROOM.manifest.json)")
    new.set_defaults(handler=cmd_new)
    sign = rsub.add_parser("sign", parents=[common], help="sign a manifest as this party and pin it")
    sign.add_argument("file", nargs="?", help="manifest file (default: the coordinator's copy)")
    sign.add_argument("-o", "--out", help="write the signed manifest here (default: in place)")
    sign.add_argument("--replace", action="store_true", help="replace another pinned manifest")
    sign.add_argument("--digest", help="with --room: which pending manifest, when several list you")
    sign.set_defaults(handler=cmd_sign)
    invites = rsub.add_parser("invitations", parents=[common],
                              help="pending manifests that list you, and who signed them")
    invites.set_defaults(handler=cmd_invitations)
    verify = rsub.add_parser("verify", parents=[common], help="check every party signed; pin the digest")
    verify.add_argument("file", nargs="?", help="manifest file (default: the coordinator's copy)")
    verify.add_argument("--replace", action="store_true", help="replace another pinned manifest")
    verify.add_argument("-o", "--out", help="also write the verified manifest to this file")
    verify.set_defaults(handler=cmd_verify)
    submit = rsub.add_parser("submit", parents=[common], help="send a signed manifest to the coordinator")
    submit.add_argument("file")
    submit.set_defaults(handler=cmd_submit)
    status = rsub.add_parser("status", parents=[common], help="room metrics and the verified privacy posture")
    status.set_defaults(handler=cmd_status)
