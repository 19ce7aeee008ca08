"""Payload models: every golden payload round-trips, and every structural mutation of it (a
field removed, added, or replaced by a value of another type) either parses or raises
InputError — never KeyError, TypeError, ValueError or a traceback."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdk.errors import InputError
from sdk.protocol.clock import check_time, parse_time
from sdk.protocol.fields import check_decimal, check_hex64, check_name
from sdk.protocol.models import Approval, Attestation, Bundle, Manifest, Upload
from sdk.protocol.records import Checkpoint, LogEntry, Receipt
from sdk.protocol.spec import OutputSpec
from tests.protocol.make_golden import World, build

Parser = Callable[[object], object]
WORLD = build()
PAYLOADS: dict[str, tuple[Parser, dict[str, Any]]] = {
    "manifest": (Manifest.from_dict, WORLD.manifest.to_dict()),
    "attestation": (Attestation.from_dict, WORLD.attestation.to_dict()),
    "upload": (Upload.from_dict, WORLD.upload.to_dict()),
    "bundle": (Bundle.from_dict, WORLD.bundle.to_dict()),
    "output": (OutputSpec.from_dict, WORLD.bundle.output.to_dict()),
    "approval": (Approval.from_dict, json.loads(WORLD.approvals[0].payload)),
    "receipt": (Receipt.from_dict, WORLD.receipt.to_dict()),
    "checkpoint": (Checkpoint.from_dict, WORLD.checkpoint.to_dict()),
    "logentry": (LogEntry.from_dict, json.loads(WORLD.log_entries[-1].payload)),
}
REPLACEMENTS: list[object] = [
    None,
    True,
    0,
    -1,
    2**53,
    1.5,
    "",
    "x",
    "alice\n",
    "0" * 64,
    "2026-01-02T03:04:05Z",
    [],
    ["x"],
    [{}],
    {},
    {"x": 1},
]


def paths(value: object, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a value inside ``value`` (object keys and list indexes)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value[:2]):
            yield (*prefix, i)
            yield from paths(item, (*prefix, i))


def mutated(doc: dict[str, Any], path: tuple[Any, ...], new: object, delete: bool = False) -> Any:
    out = copy.deepcopy(doc)
    parent = out
    for step in path[:-1]:
        parent = parent[step]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return out


def parse_or_input_error(parser: Parser, doc: object) -> None:
    try:
        parser(doc)
    except InputError:
        pass


@pytest.mark.parametrize("name", PAYLOADS)
def test_golden_payload_round_trips(name: str) -> None:
    parser, doc = PAYLOADS[name]
    parsed = parser(doc)
    assert parsed.to_dict() == doc  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", PAYLOADS)
def test_every_mutation_is_parsed_or_an_input_error(name: str) -> None:
    parser, doc = PAYLOADS[name]
    for path in paths(doc):
        parse_or_input_error(parser, mutated(doc, path, None, delete=True))
        for new in REPLACEMENTS:
            parse_or_input_error(parser, mutated(doc, path, new))
    for top in (None, [], "x", 1, {}, {"unknown": 1}, {**doc, "unknown": 1}):
        with pytest.raises(InputError):
            parser(top)


FREE_FORM = {"params", "details", "budget_left", "timings_ms", "roles"}  # maps keyed by names


@pytest.mark.parametrize("name", PAYLOADS)
def test_unknown_fields_are_rejected_at_every_level(name: str) -> None:
    parser, doc = PAYLOADS[name]
    for path in paths(doc):
        inner = copy.deepcopy(doc)
        node = inner
        for step in path:
            node = node[step]
        if isinstance(node, dict) and node and path[-1] not in FREE_FORM:
            node["zz_unknown"] = 1
            with pytest.raises(InputError, match="unknown field"):
                parser(inner)


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(sorted(PAYLOADS)),
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.floats(),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
        max_leaves=10,
    ),
    data=st.data(),
)
def test_random_values_anywhere(name: str, value: object, data: st.DataObject) -> None:
    parser, doc = PAYLOADS[name]
    all_paths = list(paths(doc))
    path = data.draw(st.sampled_from(all_paths))
    parse_or_input_error(parser, mutated(doc, path, value))


@pytest.mark.parametrize(
    "text",
    ["alice\n", "\u0662\u0660\u0662\u0666", "a b", "", "-x" * 40],
)
def test_names_are_strict(text: str) -> None:
    with pytest.raises(InputError):
        check_name(text, "name")


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-02T03:04:05Z\n",
        "\u0662\u0660\u0662\u0666-01-02T03:04:05Z",
        "2026-01-02T03:04:05+00:00",
        "2026-01-02T03:04:05.1Z",
        "2026-02-30T00:00:00Z",
        "2026-1-02T03:04:05Z",
        5,
    ],
)
def test_times_are_strict(text: object) -> None:
    with pytest.raises(InputError):
        check_time(text, "t")
    with pytest.raises(InputError):
        parse_time(text, "t")


@pytest.mark.parametrize("text", ["1.5\n", "01", "1e3", "1.", ".5", "+1", "1.5 ", "\u0661", 1.5, 1])
def test_decimals_are_strict(text: object) -> None:
    with pytest.raises(InputError):
        check_decimal(text, "d")


@pytest.mark.parametrize("text", ["a" * 64 + "\n", "A" * 64, "a" * 63, "g" * 64, None])
def test_digests_are_strict(text: object) -> None:
    with pytest.raises(InputError):
        check_hex64(text, "h")


def test_world_type() -> None:
    assert isinstance(WORLD, World)


def test_error_messages_quote_untrusted_names_briefly() -> None:
    doc = {"x" * 100_000 + str(i): 1 for i in range(50)}
    with pytest.raises(InputError) as info:
        Approval.from_dict(doc)
    assert len(str(info.value)) < 400
    assert "45 more" in str(info.value)
