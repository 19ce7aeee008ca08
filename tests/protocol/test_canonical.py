"""Canonical JSON (RFC 8785) and the strict parser: the RFC's examples, the ES6 number table,
the reference implementation's test data, rejections (T60), size caps, and round-trip
properties."""

from __future__ import annotations

import json
import math
import struct
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdk.errors import InputError, SealroomError
from sdk.protocol.canonical import MAX_DEPTH, canonical_json, parse_json

# RFC 8785 Appendix B: IEEE-754 bit patterns and their ES6 Number.prototype.toString
RFC8785_NUMBERS = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]
RFC8785_NON_FINITE = ["7fffffffffffffff", "7ff0000000000000", "fff0000000000000"]

# more ES6 Number.prototype.toString results (ECMA-262 §7.1.12.1 boundaries)
ES6_NUMBERS = [
    (1.0, "1"),
    (-1.5, "-1.5"),
    (0.1, "0.1"),
    (100.0, "100"),
    (1e20, "100000000000000000000"),
    (1e21, "1e+21"),
    (123e18, "123000000000000000000"),
    (1.5e21, "1.5e+21"),
    (1e-6, "0.000001"),
    (1e-7, "1e-7"),
    (1.25e-6, "0.00000125"),
    (1.25e-7, "1.25e-7"),
    (123456789012345680000.0, "123456789012345680000"),
    (4.35, "4.35"),
    (0.5e-323, "5e-324"),
    (2**53 + 2.0, "9007199254740994"),
    (-0.0, "0"),
]

# RFC 8785 §3.2.2 and the reference implementation's testdata (input → output)
JCS_EXAMPLES = [
    (
        b'{\n  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],\n'
        b'  "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",\n'
        b'  "literals": [null, true, false]\n}',
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}',
    ),
    (  # arrays.json
        b'[\n  56,\n  {\n    "d": true,\n    "10": null,\n    "1": [ ]\n  }\n]',
        '[56,{"1":[],"10":null,"d":true}]',
    ),
    (  # structures.json
        b'{\n  "1": {"f": {"f": "hi","F": 5} ,"\\n": 56.0},\n  "10": { },\n  "": "empty",\n'
        b'  "a": { },\n  "111": [ { } ],\n  "A": { }\n}',
        '{"":"empty","1":{"\\n":56,"f":{"F":5,"f":"hi"}},"10":{},"111":[{}],"A":{},"a":{}}',
    ),
    (  # french.json: no locale in sorting
        '{\n  "peach": "This sorting order",\n  "p\u00e9ch\u00e9": "is wrong according to French",'
        '\n  "p\u00eache": "but canonicalization MUST",\n  "sin":   "ingnore locale"\n}\n'.encode(),
        '{"peach":"This sorting order","p\u00e9ch\u00e9":"is wrong according to French",'
        '"p\u00eache":"but canonicalization MUST","sin":"ingnore locale"}',
    ),
    (  # unicode.json: no normalization
        b'{\n  "Unnormalized Unicode":"\\u1e0d\\u0307"\n}\n',
        '{"Unnormalized Unicode":"\u1e0d\u0307"}',
    ),
    (  # weird.json: sorting by UTF-16 code units
        b'{\n  "\\u20ac": "Euro Sign",\n  "1": "One",\n  "\\u0080": "Control\\u007f",\n'
        b'  "\\ud83d\\ude02": "Smiley",\n  "\\u00f6": "Latin Small Letter O With Diaeresis",\n'
        b'  "\\ufb33": "Hebrew Letter Dalet With Dagesh",\n  "</script>": "Browser Challenge"\n}\n',
        '{"1":"One","</script>":"Browser Challenge","\u0080":"Control\u007f",'
        '"\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign",'
        '"\U0001f602":"Smiley","\ufb33":"Hebrew Letter Dalet With Dagesh"}',
    ),
]


@pytest.mark.parametrize(("bits", "expected"), RFC8785_NUMBERS)
def test_rfc8785_number_serialization(bits: str, expected: str) -> None:
    value = struct.unpack(">d", bytes.fromhex(bits))[0]
    assert canonical_json(value) == expected.encode()
    assert canonical_json([value]) == f"[{expected}]".encode()


@pytest.mark.parametrize("bits", RFC8785_NON_FINITE)
def test_rfc8785_non_finite_numbers_are_errors(bits: str) -> None:
    value = struct.unpack(">d", bytes.fromhex(bits))[0]
    with pytest.raises(InputError):
        canonical_json({"x": value})


@pytest.mark.parametrize(("value", "expected"), ES6_NUMBERS)
def test_es6_number_serialization(value: float, expected: str) -> None:
    assert canonical_json(value) == expected.encode()


@settings(max_examples=1000, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_number_serialization_round_trips_shortest(value: float) -> None:
    text = canonical_json(value).decode()
    assert float(text) == value  # exact round trip
    # ES6 form: no '+' in plain notation, no leading zeros, exponent form only outside 1e-7..1e21
    magnitude = abs(value)
    if magnitude and (magnitude >= 1e21 or magnitude < 1e-6):
        assert "e" in text
    else:
        assert "e" not in text
    # shortest: never more significant digits than Python's repr
    digits = text.lstrip("-").split("e")[0].replace(".", "").strip("0")
    assert (
        len(digits) <= len(repr(magnitude).split("e")[0].replace(".", "").strip("0")) or not value
    )


@pytest.mark.parametrize(("source", "expected"), JCS_EXAMPLES)
def test_jcs_examples(source: bytes, expected: str) -> None:
    assert canonical_json(parse_json(source)) == expected.encode("utf-8")


def test_rfc8785_key_sorting_example() -> None:
    # §3.2.3: sorted by UTF-16 code units, not by code points or UTF-8 bytes
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    keys = list(json.loads(canonical_json(value)))
    assert keys == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


def test_string_escapes() -> None:
    assert canonical_json('\b\f\n\r\t"\\/\x00\x1f\x7f\u2028') == (
        b'"\\b\\f\\n\\r\\t\\"\\\\/\\u0000\\u001f\x7f\xe2\x80\xa8"'
    )


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        2**53 + 1,
        -(2**53) - 1,
        "\ud800",
        {"\udc00": 1},
        {1: "x"},
        b"bytes",
        {1.5},
        object(),
    ],
    ids=repr,
)
def test_canonical_json_rejects_what_jcs_cannot_represent(value: object) -> None:
    with pytest.raises(InputError):
        canonical_json(value)


def test_canonical_json_depth_limit() -> None:
    deep: object = 1
    for _ in range(MAX_DEPTH):
        deep = [deep]
    assert canonical_json(deep) == b"[" * MAX_DEPTH + b"1" + b"]" * MAX_DEPTH
    with pytest.raises(InputError):
        canonical_json([deep])


# -- strict parser (T60) ------------------------------------------------------------------------

REJECTED = {
    "duplicate key": b'{"epsilon":0.1,"epsilon":10}',
    "nested duplicate key": b'{"a":{"b":1,"b":1}}',
    "NaN": b"NaN",
    "NaN in array": b"[NaN]",
    "Infinity": b'{"x":Infinity}',
    "-Infinity": b"[-Infinity]",
    "1e400": b"[1e400]",
    "-1e400": b"[-1e400]",
    "2^53+1": b"[9007199254740993]",
    "-(2^53+1)": b"[-9007199254740993]",
    "huge int": b"[123456789012345678901234567890]",
    "lone high surrogate": b'["\\ud800"]',
    "lone low surrogate": b'["\\udc00"]',
    "lone surrogate key": b'{"\\ud800":1}',
    "surrogate as UTF-8": b'["\xed\xa0\x80"]',
    "BOM": b'\xef\xbb\xbf{"a":1}',
    "trailing data": b'{"a":1} x',
    "two documents": b"{}{}",
    "trailing comma": b"[1,]",
    "empty": b"",
    "whitespace": b"  ",
    "invalid UTF-8": b'["\xff"]',
    "overlong UTF-8": b'["\xc0\xaf"]',
    "raw control character": b'["a\x01"]',
    "single quotes": b"{'a':1}",
    "leading zero": b"[01]",
    "hex": b"[0x10]",
    "plus sign": b"[+1]",
    "bare dot": b"[.5]",
    "unquoted key": b"{a:1}",
    "comment": b"[1 /* c */]",
    "unterminated": b'{"a":[1,2',
    "bad escape": b'["\\x41"]',
    "too deep": b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
    "too deep objects": b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1),
}


@pytest.mark.parametrize("data", REJECTED.values(), ids=REJECTED.keys())
def test_parser_rejections(data: bytes) -> None:
    with pytest.raises(InputError):
        parse_json(data)


def test_parser_accepts_limits() -> None:
    assert parse_json(b"[9007199254740992,-9007199254740992]") == [2**53, -(2**53)]
    assert parse_json(b'"\\ud83d\\ude00"') == "\U0001f600"
    deep = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert canonical_json(parse_json(deep)) == deep
    assert parse_json(b' {"a" : [ 1 , 2 ] } \n') == {"a": [1, 2]}
    assert parse_json(memoryview(b"{}")) == {}
    assert parse_json(bytearray(b"[]")) == []


def test_parser_wants_bytes() -> None:
    with pytest.raises(InputError):
        parse_json("{}")  # type: ignore[arg-type]


@pytest.mark.timeout(20)
def test_deep_nesting_is_an_input_error_not_a_recursion_error() -> None:
    for n in (10_000, 1_000_000):
        with pytest.raises(InputError):
            parse_json(b"[" * n + b"]" * n)
        with pytest.raises(InputError):
            parse_json(b'{"a":' * n)


@pytest.mark.timeout(20)
def test_size_cap_is_checked_before_parsing() -> None:
    big = b"[" + b"1," * (50 * 1024 * 1024) + b"1]"  # ~100 MB
    tracemalloc.start()
    try:
        for _ in range(100):
            with pytest.raises(InputError, match="larger than"):
                parse_json(big, max_bytes=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # nothing was copied, decoded or scanned: a parse would allocate the 100 MB again
    assert peak < 1 << 20
    with pytest.raises(InputError, match="larger than"):
        parse_json(b"[]", max_bytes=1)
    assert parse_json(b"[]", max_bytes=2) == []


def test_default_cap_applies() -> None:
    with pytest.raises(InputError, match="larger than"):
        parse_json(b" " * (16 * 1024 * 1024 + 1))


# -- properties ---------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_canonical_round_trip(value: object) -> None:
    data = canonical_json(value)
    parsed = parse_json(data)
    assert parsed == value
    assert canonical_json(parsed) == data  # idempotent


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_canonical_form_of_any_serialization_is_the_same(value: object) -> None:
    """Whatever whitespace, key order or escaping a producer uses, the canonical bytes agree."""
    loose = json.dumps(value, indent=1, ensure_ascii=True, sort_keys=False).encode()
    assert canonical_json(parse_json(loose)) == canonical_json(value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_parser_only_ever_raises_input_error(data: bytes) -> None:
    try:
        value = parse_json(data)
    except SealroomError as exc:
        assert isinstance(exc, InputError)
    else:
        if not any(isinstance(v, float) for v in _leaves(value)):
            assert parse_json(canonical_json(value)) == value


@settings(max_examples=300, deadline=None)
@given(json_values, st.data())
def test_any_byte_flip_in_json_is_rejected_or_parses(value: object, data: st.DataObject) -> None:
    raw = bytearray(canonical_json(value))
    if not raw:
        return
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= 1 << data.draw(st.integers(0, 7))
    try:
        parse_json(bytes(raw))
    except SealroomError as exc:
        assert isinstance(exc, InputError)


def _leaves(value: object) -> list[object]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _leaves(v)]
    if isinstance(value, list):
        return [x for v in value for x in _leaves(v)]
    return [value]


def test_float_sanity() -> None:
    assert math.isfinite(parse_json(b"[1e308]")[0])  # type: ignore[index]
    assert parse_json(b"[1e-400]") == [0.0]  # underflow is a number, not an error
