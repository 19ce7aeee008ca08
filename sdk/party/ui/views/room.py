"""The room page: parties, datasets with their column roles, the workers' verified
attestations and measurements, and the state of the log's verification."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sdk.party.ui.render import Response
from sdk.party.ui.request import Request
from sdk.party.ui.state import snapshot


@dataclass(frozen=True)
class ColumnRow:
    name: str
    type: str
    role: str


def room_page(req: Request) -> Response:
    """GET /"""
    snap = snapshot(req.session, req.room_id)
    manifest = snap.room.manifest
    columns = {
        d.name: [
            ColumnRow(
                c.name, c.type, "id (joined only)" if c.name == d.id_column else d.role(c.name)
            )
            for c in d.schema
        ]
        for d in manifest.datasets
    }
    kinds = Counter(e.kind for e in snap.log.entries) if snap.log is not None else Counter()
    return req.page(
        "room.html",
        "room",
        snap=snap,
        manifest=manifest,
        columns=columns,
        kinds=sorted(kinds.items()),
    )
