"""The ``match_preview`` statement: a party's signed word on one match preview (ECDH PSI
cardinality before uploading, :mod:`sdk.protocol.psi`), and the rules both parties and the
coordinator apply to it.

Each of the two parties signs one after its own computation: the room and manifest, the
session, its dataset and its partner's, the number of distinct valid ids it brought
(``own_size``), the number the partner's messages carried (``partner_size``) and the
intersection size it computed. The two statements of a session agree when each one's
``own_size`` is the other's ``partner_size`` and their intersections are equal.

A preview is refused below the room's minimum group size for the pair
(:func:`preview_min_group_size`), and when the two datasets' identifiers are not of one kind.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, ClassVar

from sdk.errors import InputError, SignatureError
from sdk.protocol.clock import check_time, format_time, utcnow
from sdk.protocol.dsse import Envelope, open_envelope, sign_envelope
from sdk.protocol.fields import check_keys, expect_mapping, get_hex64, get_int, get_name
from sdk.protocol.keys import PartyKey
from sdk.protocol.models import Dataset, Manifest
from sdk.protocol.policy import strictest
from sdk.protocol.psi import MAX_SET_SIZE, check_session_id

MAX_STATEMENT_BYTES = 16 * 1024


@dataclass(frozen=True)
class MatchPreview:
    """One party's statement of one preview session's result."""

    KIND: ClassVar[str] = "match_preview"

    room_id: str
    manifest_digest: str
    session: str
    party: str
    dataset: str
    partner: str
    partner_dataset: str
    own_size: int
    partner_size: int
    intersection: int
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: object) -> MatchPreview:
        where = "match_preview"
        d = expect_mapping(data, where)
        check_keys(d, where, [f.name for f in fields(cls)])
        preview = cls(
            room_id=get_name(d, "room_id", where),
            manifest_digest=get_hex64(d, "manifest_digest", where),
            session=check_session_id(d["session"], f"{where}.session"),
            party=get_name(d, "party", where),
            dataset=get_name(d, "dataset", where),
            partner=get_name(d, "partner", where),
            partner_dataset=get_name(d, "partner_dataset", where),
            own_size=get_int(d, "own_size", where, minimum=1, maximum=MAX_SET_SIZE),
            partner_size=get_int(d, "partner_size", where, minimum=1, maximum=MAX_SET_SIZE),
            intersection=get_int(d, "intersection", where, maximum=MAX_SET_SIZE),
            created_at=check_time(d["created_at"], f"{where}.created_at"),
        )
        if preview.party == preview.partner:
            raise InputError(f"{where}: a party previews with another party")
        if preview.intersection > min(preview.own_size, preview.partner_size):
            raise InputError(f"{where}.intersection: larger than a set")
        return preview

    def agrees_with(self, other: MatchPreview) -> bool:
        """Whether ``other`` is the partner's statement of the same session and result."""
        return (other.room_id, other.manifest_digest, other.session, other.party, other.dataset,
                other.partner, other.partner_dataset, other.own_size, other.partner_size,
                other.intersection) == (
            self.room_id, self.manifest_digest, self.session, self.partner,
            self.partner_dataset, self.party, self.dataset, self.partner_size, self.own_size,
            self.intersection)


def pair_datasets(manifest: Manifest, party: str, dataset: str, partner: str,
                  partner_dataset: str) -> tuple[Dataset, Dataset]:
    """The two datasets of a preview, checked: each owned by its party, two different parties
    of the room, identifiers of one kind (not ``none``).

    Raises ``InputError`` otherwise (``SignatureError`` when a dataset is another's)."""
    manifest.party(party)
    manifest.party(partner)
    if party == partner:
        raise InputError("match preview: choose another party to preview with")
    own, theirs = manifest.dataset(dataset), manifest.dataset(partner_dataset)
    if own.owner != party:
        raise SignatureError(f"dataset {dataset!r} belongs to {own.owner}, not {party}")
    if theirs.owner != partner:
        raise InputError(f"dataset {partner_dataset!r} belongs to {theirs.owner}, not {partner}")
    if own.id_kind != theirs.id_kind or own.id_kind == "none":
        raise InputError(f"match preview: {dataset!r} ({own.id_kind}) and {partner_dataset!r} "
                         f"({theirs.id_kind}) have no identifier of one kind to match on")
    return own, theirs


def preview_min_group_size(manifest: Manifest, dataset: str, partner_dataset: str) -> int:
    """The smallest set a preview of these two datasets accepts: the strictest of the room's
    default and both datasets' minimum group sizes."""
    return strictest(manifest.default_min_group_size, manifest.dataset(dataset).min_group_size,
                     manifest.dataset(partner_dataset).min_group_size)


def make_match_preview(key: PartyKey, manifest: Manifest, manifest_digest: str, *,
                       session: str, dataset: str, partner: str, partner_dataset: str,
                       own_size: int, partner_size: int, intersection: int,
                       now: datetime | None = None) -> Envelope:
    """The party's signed ``match_preview`` statement, created ``now`` (default: the clock)."""
    preview = MatchPreview(
        room_id=manifest.room_id, manifest_digest=manifest_digest, session=session,
        party=key.name, dataset=dataset, partner=partner, partner_dataset=partner_dataset,
        own_size=own_size, partner_size=partner_size, intersection=intersection,
        created_at=format_time(now or utcnow()))
    checked = MatchPreview.from_dict(preview.to_dict())
    return sign_envelope(MatchPreview.KIND, checked.to_dict(), [key.signer])


def verify_match_preview(envelope: Envelope, manifest: Manifest,
                         manifest_digest: str) -> MatchPreview:
    """Verify a ``match_preview`` statement: signed by the party it names (its manifest key),
    bound to this room and manifest, about datasets of the two parties it names.

    Raises:
        SignatureError: not signed by the party it names.
        InputError: another room or manifest, unknown parties or datasets, malformed.
    """
    payload, result = open_envelope(envelope, MatchPreview.KIND, manifest.signing_keys(),
                                    max_payload_bytes=MAX_STATEMENT_BYTES)
    preview = MatchPreview.from_dict(payload)
    if preview.party not in result.signed:
        raise SignatureError("match_preview: not signed by the party it names")
    if preview.room_id != manifest.room_id or preview.manifest_digest != manifest_digest:
        raise InputError("match_preview: bound to another room or manifest")
    pair_datasets(manifest, preview.party, preview.dataset, preview.partner,
                  preview.partner_dataset)
    return preview


__all__ = [
    "MatchPreview",
    "make_match_preview",
    "pair_datasets",
    "preview_min_group_size",
    "verify_match_preview",
]
