"""Fixtures of the protocol-core tests: the golden room (fixed keys, fixed clock)."""

from __future__ import annotations

import pytest

from tests.protocol.make_golden import World, build


@pytest.fixture(scope="session")
def world() -> World:
    """The golden room, built once: keys, manifest, attestation, upload, bundle, approvals,
    log entries, checkpoint and receipt (see ``make_golden.py``)."""
    return build()
