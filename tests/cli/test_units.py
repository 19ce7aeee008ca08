"""In-process unit tests of the CLI's local logic: rollback/fork detection against the stored
checkpoint, template parameters, tables, the risk report and the receipt file's structure."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from sdk.cli.context import render_table
from sdk.errors import ConflictError, InputError, LogError
from sdk.party.bundles import parse_params
from sdk.party.home import Home
from sdk.party.receipts import ReceiptFile
from sdk.party.trust import check_consistency
from sdk.protocol import merkle
from sdk.protocol.dsse import Envelope
from sdk.protocol.records import Checkpoint


def leaves(n: int, tag: str = "") -> list[bytes]:
    return [merkle.leaf_hash(f"{tag}entry-{i}".encode()) for i in range(n)]


def checkpoint(ls: list[bytes]) -> Checkpoint:
    return Checkpoint("sealroom/r/log", len(ls), merkle.root(ls).hex(), "2026-01-01T00:00:00Z")


@pytest.fixture()
def home(tmp_path: Path) -> Home:
    h = Home(tmp_path)
    seen = leaves(5)
    h.save_checkpoint("r", checkpoint(seen), Envelope("t", b"{}", ()))
    return h


def test_nothing_stored_accepts_anything(tmp_path: Path) -> None:
    assert check_consistency(Home(tmp_path), "r", leaves(3), checkpoint(leaves(3))) is None


def test_an_extension_is_consistent(home: Home) -> None:
    grown = leaves(9)
    previous = check_consistency(home, "r", grown, checkpoint(grown))
    assert previous is not None and previous.tree_size == 5
    same = leaves(5)
    assert check_consistency(home, "r", same, checkpoint(same)) is not None


def test_a_shorter_log_is_a_rollback(home: Home) -> None:
    with pytest.raises(LogError, match="rollback"):
        check_consistency(home, "r", leaves(4), checkpoint(leaves(4)))
    with pytest.raises(LogError, match="rollback"):
        check_consistency(home, "r", [], None)


def test_a_rewritten_prefix_is_a_fork(home: Home) -> None:
    forked = leaves(3) + leaves(6, tag="other")[3:]
    with pytest.raises(LogError, match="fork"):
        check_consistency(home, "r", forked, checkpoint(forked))
    same_size = leaves(4) + leaves(5, tag="x")[4:]
    with pytest.raises(LogError, match="fork"):
        check_consistency(home, "r", same_size, checkpoint(same_size))


def test_a_changed_manifest_is_not_silently_repinned(tmp_path: Path) -> None:
    h = Home(tmp_path)
    one, two = Envelope("t", b'{"a":1}', ()), Envelope("t", b'{"a":2}', ())
    assert h.pin_manifest("r", one) is True
    assert h.pin_manifest("r", one) is False
    with pytest.raises(ConflictError):
        h.pin_manifest("r", two)
    h.save_checkpoint("r", checkpoint(leaves(2)), one)
    assert h.pin_manifest("r", two, replace=True) is True
    assert h.last_checkpoint("r") is None  # a new room history starts


def test_template_parameters() -> None:
    params = parse_params(["epsilon=1", "min_group_size=50", "spend_upper=50000", "left=a",
                           "segments=[x, y]", "flag=true", "raw:=[1,2]"])
    assert params == {"epsilon": "1", "min_group_size": 50, "spend_upper": "50000",
                      "left": "a", "segments": ["x", "y"], "flag": True, "raw": [1, 2]}
    with pytest.raises(InputError):
        parse_params(["novalue"])
    with pytest.raises(InputError):
        parse_params(["bad:={"])


def test_tables_align_numbers_right() -> None:
    text = render_table(["name", "value"], [("a", 1.23456), ("bb", None), ("c", "45000")])
    lines = text.splitlines()
    assert lines[0].startswith("name") and lines[2].endswith("1.235")
    assert lines[3].endswith("-") and lines[4].endswith("45000")


def test_receipt_file_rejects_foreign_structure() -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    with pytest.raises(InputError):
        ReceiptFile.from_dict({"type": "something-else", "version": 1})
    base = {"type": "sealroom-receipt-file", "version": 1, "room_id": "r", "run_id": "x",
            "manifest_digest": digest, "receipt": {}, "attestations": [], "log_entry": {},
            "inclusion_proof": ["zz"], "checkpoint": None, "outputs": {}}
    with pytest.raises(InputError):
        ReceiptFile.from_dict(base)


def test_party_commands_are_known_without_plugin_discovery() -> None:
    """``run_command`` skips entry-point discovery for the commands in PARTY_COMMANDS, so the
    set must be exactly the party and auditor commands the parser registers."""
    import argparse

    from sdk.cli import PARTY_COMMANDS, build_parser

    parser, _common = build_parser({})
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == PARTY_COMMANDS
