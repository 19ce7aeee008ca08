# ruff: noqa: F811  (the fixtures imported from test_offline are parameters here)
"""Identifiers validated at seal time, and refusal of what cannot be a dataset (issue #10):
the validators one value at a time, then the real ``sealroom data seal`` process on every bad
input — one clear line, the right exit code, no value echoed, nothing left behind."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from sdk.errors import InputError, quote_user
from sdk.party.datasets import e164, prepare_dataset, valid_email
from sdk.protocol.models import Dataset, Upload
from tests.cli.conftest import Result, fails, ok, sealroom
from tests.cli.test_offline import signed_room, world  # noqa: F401  (module fixtures)

CANARY = "canary.zq81@nodot"


@pytest.mark.parametrize(
    "email",
    [
        "a@b.com",
        " A@B.COM ",
        "first.last+tag@sub.example.co.uk",
        "ü@example.de",
        "a@b-c.io",
        "x@" + "a" * 63 + ".com",
        "a@b.c1",
    ],
)
def test_good_emails(email: str) -> None:
    assert valid_email(email)


@pytest.mark.parametrize(
    "email",
    [
        "",
        "ab.com",
        "a@@b.com",
        "a@b@c.com",
        "@b.com",
        "a b@c.com",
        "a@b c.com",
        "a@b",
        "a@-b.com",
        "a@b-.com",
        "a@b..com",
        "a@.b.com",
        "a@b.com.",
        "a@bü.com",
        "a@b.123",
        "a\u00a0b@c.com",
        "a\u200b@c.com",
        "x@" + "a" * 64 + ".com",
        "a@b_c.com",
        "a\x00@b.com",
    ],
)
def test_bad_emails(email: str) -> None:
    assert not valid_email(email)


def test_phones_with_and_without_a_region() -> None:
    assert e164("+33 6 12 34 56 78", None) == "+33612345678"
    assert e164("+1 (650) 253-0000", None) == "+16502530000"
    assert e164("06 12 34 56 78", None) is None  # no region: only +-prefixed numbers
    assert e164("06 12 34 56 78", "FR") == "+33612345678"
    assert e164("0033 6 12 34 56 78", "FR") == "+33612345678"
    assert e164("+33 1", None) is None  # too short to be a number
    assert e164("not a phone", "FR") is None


def _dataset(kind: str) -> Dataset:
    return Dataset.from_dict(
        {
            "name": "d",
            "owner": "o",
            "schema": [{"name": "id", "type": "string"}],
            "id_column": "id",
            "id_kind": kind,
            "min_group_size": 5,
            "epsilon_budget": "1",
        }
    )


def _prep(tmp_path: Path, kind: str, body: str, **kw: object) -> object:
    src = tmp_path / "in.csv"
    src.write_text("id\n" + body)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return prepare_dataset(src, _dataset(kind), out, **kw)  # type: ignore[arg-type]


def test_sha256_ids(tmp_path: Path) -> None:
    good = "AB" * 32
    prepared = _prep(tmp_path, "sha256", f"{good}\n{'a' * 63}\n{'g' * 64}\n")
    assert prepared.row_count == 1  # type: ignore[attr-defined]
    assert prepared.rejected == {"invalid_sha256": 2}  # type: ignore[attr-defined]


def test_phone_kind_counts_and_region(tmp_path: Path) -> None:
    body = "+33 6 12 34 56 78\n06 12 34 56 78\n\nabc\n"
    assert _prep(tmp_path, "phone", body).rejected == {  # type: ignore[attr-defined]
        "empty": 1,
        "invalid_phone": 2,
    }
    assert _prep(tmp_path, "phone", body, region="fr").rejected == {  # type: ignore[attr-defined]
        "empty": 1,
        "invalid_phone": 1,
    }
    with pytest.raises(InputError, match="not a known phone region"):
        _prep(tmp_path, "phone", body, region="ZZ")


def test_quote_user_caps_and_escapes() -> None:
    assert quote_user("a\x00b\n") == "'a\\x00b\\n'"
    assert quote_user("x" * 100) == "'" + "x" * 60 + "…'"


def test_upload_rejected_field_is_optional_and_checked() -> None:
    base = {
        "room_id": "r",
        "manifest_digest": "0" * 64,
        "dataset": "d",
        "version": 1,
        "schema_digest": "0" * 64,
        "row_count": 3,
        "ciphertext_digest": "0" * 64,
        "ciphertext_size": 9,
        "key_commitment": "0" * 64,
        "attestation_digest": "0" * 64,
        "created_at": "2026-01-01T00:00:00Z",
    }
    assert "rejected" not in Upload.from_dict(base).to_dict()
    with_drops = Upload.from_dict({**base, "rejected": {"empty": 2, "invalid_email": 1}})
    assert with_drops.to_dict()["rejected"] == {"empty": 2, "invalid_email": 1}
    # one encoding only (the statement is parsed exactly as signed): no zero counts, no {}
    for bad in ({"why": 1}, {"empty": -1}, {"empty": "1"}, {"empty": True}, [], {"empty": 0}, {}):
        with pytest.raises(InputError):
            Upload.from_dict({**base, "rejected": bad})


# -- the real CLI ------------------------------------------------------------------------------


def _seal(world: dict[str, Path], file: Path, out: Path, *extra: str, key: str = "brand") -> Result:
    root = world["root"]
    return sealroom(
        "--key",
        str(root / f"{key}.key"),
        "--room",
        "cliroom",
        "data",
        "seal",
        str(file),
        "--dataset",
        "customers",
        "--attestation",
        str(root / "attestation.json"),
        "-o",
        str(out),
        *extra,
        home=world[f"home_{key}"],
    )


def _nothing_left(where: Path, home: Path) -> None:
    assert sorted(p.name for p in where.iterdir()) == ["in.dat"], list(where.iterdir())
    leftovers = [p for p in home.rglob("*") if ".seal" in p.name or p.suffix == ".parquet"]
    assert not leftovers, leftovers


def test_invalid_ids_are_dropped_counted_and_listed_without_values(
    world: dict[str, Path], signed_room: Path, tmp_path: Path
) -> None:
    src = tmp_path / "in.csv"
    src.write_text(
        "email,plan,converted\na@b.com,team,1\n,team,0\n"
        f"{CANARY},team,1\nx@@y.com,starter,0\nc@d.org,team,1\n"
    )
    res = ok(_seal(world, src, tmp_path / "c", "--rejects", str(tmp_path / "rejects.csv")))
    assert "3 rows dropped at seal time (empty: 1, invalid_email: 2)" in res.out
    assert (tmp_path / "rejects.csv").read_text().splitlines() == [
        "row,reason",
        "2,empty",
        "3,invalid_email",
        "4,invalid_email",
    ]
    assert CANARY not in res.out + res.err
    assert CANARY not in (tmp_path / "rejects.csv").read_text()
    statement = json.loads((tmp_path / "c.upload.json").read_text())
    payload = json.loads(base64.b64decode(statement["payload"]))
    assert payload["row_count"] == 2
    assert payload["rejected"] == {"empty": 1, "invalid_email": 2}


def test_strict_refuses_at_the_first_invalid_id(
    world: dict[str, Path], signed_room: Path, tmp_path: Path
) -> None:
    src = tmp_path / "in.dat"
    src.write_text(f"email,plan,converted\na@b.com,team,1\n{CANARY},team,1\n")
    res = fails(
        _seal(world, src, tmp_path / "c", "--strict", "--rejects", str(tmp_path / "r.csv")),
        "E_INPUT",
        2,
    )
    assert "row 2: invalid_email email" in res.err
    assert CANARY not in res.out + res.err
    _nothing_left(tmp_path, world["home_brand"])


BAD_FILES: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "data file is empty (0 bytes)"),
    "header-only": (b"email,plan,converted\n", "header but no data rows"),
    "binary": (bytes(range(256)) * 20, "neither CSV nor Parquet"),
    "not-utf8": ("email,plan,converted\ncafé@b.com,team,1\n".encode("latin-1"), "not UTF-8"),
    "no-valid-rows": (
        f"email,plan,converted\n{CANARY},team,1\n,team,0\n".encode(),
        "no valid rows (2 dropped: empty 1, invalid_email 1)",
    ),
    "wrong-schema": (
        ("email,plan,converted,\x01" + "x" * 4000 + "\nq@b.com,team,1,2\n").encode(),
        "unexpected ['\\x01" + "x" * 59 + "…']",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_what_cannot_be_a_dataset_is_refused(
    world: dict[str, Path], signed_room: Path, tmp_path: Path, case: str
) -> None:
    content, message = BAD_FILES[case]
    src = tmp_path / "in.dat"
    src.write_bytes(content)
    res = fails(
        _seal(world, src, tmp_path / "c", "--rejects", str(tmp_path / "r.csv")), "E_INPUT", 2
    )
    assert message in res.err, res.err
    error = next(line for line in res.err.splitlines() if line.startswith("error: "))
    assert len(error) < 300, error
    assert CANARY not in res.out + res.err
    _nothing_left(tmp_path, world["home_brand"])


def test_parquet_is_told_by_content_and_wrong_party_is_refused(
    world: dict[str, Path], signed_room: Path, tmp_path: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "in.dat"  # no .parquet suffix: the PAR1 magic decides
    pq.write_table(
        pa.table(
            {
                "email": ["x@y.com", "bad"],
                "plan": ["team", "starter"],
                "converted": pa.array([0, 1], pa.int64()),
            }
        ),
        src,
    )
    res = ok(_seal(world, src, tmp_path / "c"))
    assert "1 row dropped at seal time (invalid_email: 1)" in res.out
    for p in tmp_path.glob("c.*"):
        p.unlink()
    fails(_seal(world, src, tmp_path / "c", key="publisher"), "E_SIGNATURE", 3)
    _nothing_left(tmp_path, world["home_publisher"])


def test_the_statement_says_one_row_per_person_only_when_it_is_true(
    world: dict[str, Path], signed_room: Path, tmp_path: Path
) -> None:
    """After normalisation (trim, lower case), ``A@b.com `` and ``a@b.com`` are one person."""
    once = tmp_path / "once.csv"
    once.write_text("email,plan,converted\na@b.com,team,1\nc@d.org,team,0\n")
    twice = tmp_path / "twice.csv"
    twice.write_text("email,plan,converted\na@b.com,team,1\n A@B.com ,starter,0\nc@d.org,team,1\n")
    res = ok(_seal(world, once, tmp_path / "o"))
    assert "one row per person" in res.out
    res = ok(_seal(world, twice, tmp_path / "t"))
    assert "one row per person" not in res.out
    for name, expected in (("o", True), ("t", None)):
        statement = json.loads((tmp_path / f"{name}.upload.json").read_text())
        payload = json.loads(base64.b64decode(statement["payload"]))
        assert payload.get("one_row_per_person") is expected
