"""Fixtures of the protocol-core tests: the golden room (fixed keys, fixed clock).

Every test here also gets a 60 s timeout unless it sets its own: a malformed input must end in a
typed error, never in a hang.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.protocol.make_golden import World, build

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents and not item.get_closest_marker(
            "timeout"
        ):
            item.add_marker(pytest.mark.timeout(60))


@pytest.fixture(scope="session")
def world() -> World:
    """The golden room, built once: keys, manifest, attestation, upload, bundle, approvals,
    log entries, checkpoint and receipt (see ``make_golden.py``)."""
    return build()
