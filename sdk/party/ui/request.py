"""One request as a view sees it: the party's session, the room, the visitor's CSRF token, the
query and the form (both already size-checked and parsed by the server)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from sdk.party.session import Session
from sdk.party.ui.render import Response, page

NAV = (
    ("room", "/", "Room"),
    ("budgets", "/budgets", "Budgets"),
    ("bundles", "/bundles", "Approvals"),
    ("runs", "/runs", "Runs"),
    ("metrics", "/metrics", "Metrics"),
)


@dataclass
class Request:
    """What a view gets."""

    session: Session
    room_id: str
    csrf: str
    query: Mapping[str, str] = field(default_factory=dict)
    form: Mapping[str, str] = field(default_factory=dict)

    @property
    def me(self) -> str:
        return self.session.key().name

    def page(
        self, template: str, nav: str, status: HTTPStatus = HTTPStatus.OK, **context: Any
    ) -> Response:
        """Render ``template`` inside the layout (navigation, party, room, CSRF token)."""
        return page(
            template,
            status,
            nav=nav,
            nav_items=NAV,
            me=self.me,
            room_id=self.room_id,
            csrf=self.csrf,
            **context,
        )
