"""Preparing a party's dataset for upload: read CSV/Parquet, check it against the manifest's
schema, normalise and hash identifiers, write Parquet, and seal it to the worker.

Identifier validation and normalisation (DESIGN §5 step 3; the exact rules are in
:func:`prepare_dataset`): emails and sha256 ids are checked and hashed in DuckDB, vectorised;
phone numbers are parsed by ``phonenumbers`` (Python, one at a time) into E.164. Rows whose
identifier is empty or invalid are dropped and counted per reason; the counts go into the signed
upload statement (``Upload.rejected``), the row numbers (never the values) into a rejects file.

Requires the ``party`` extra (pyarrow, duckdb); imported lazily so that verifying receipts
never needs them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sdk.errors import InputError, quote_user
from sdk.protocol.models import REJECT_REASONS, Dataset
from sdk.protocol.sealing import SealResult, seal_stream, upload_binding

_DUCK_TYPES = {
    "string": "VARCHAR",
    "int": "BIGINT",
    "float": "DOUBLE",
    "bool": "BOOLEAN",
    "date": "DATE",
}


SNIFF_BYTES = 8192
_EMAIL_RE = (
    r"[^@\s\p{Z}\p{C}]{1,64}@([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+"
    r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
)
_TRIM = "' \t\r\n'"


@dataclass(frozen=True)
class PreparedDataset:
    """A normalised Parquet file ready to seal, and what was dropped on the way.

    ``rejected`` maps a reason of :data:`REJECT_REASONS` to the number of rows dropped for it
    (only reasons with at least one row); ``rejects`` is the CSV (``row,reason``, 1-based data
    rows, never values) when one was asked for.
    """

    path: Path
    row_count: int
    rejected: dict[str, int] = field(default_factory=dict)
    rejects: Path | None = None
    one_row_per_person: bool = False

    @property
    def dropped(self) -> int:
        return sum(self.rejected.values())


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sniff_format(source: Path) -> str:
    """``csv`` or ``parquet``, by content (never by the name): Parquet starts with ``PAR1``;
    anything else must be UTF-8 text with no NUL byte in its first 8 KiB. Raises
    ``InputError`` for an empty file, a binary file and a file that is not UTF-8; the message
    never echoes the file's bytes."""
    import codecs

    size = source.stat().st_size
    if size == 0:
        raise InputError("data file is empty (0 bytes): expected a CSV with a header or Parquet")
    with open(source, "rb") as f:
        head = f.read(SNIFF_BYTES)
        if head.startswith(b"PAR1"):
            return "parquet"
        if b"\x00" in head:
            raise InputError(
                "data file is neither CSV nor Parquet: binary content (a NUL byte in the first "
                "8 KiB) and no Parquet magic"
            )
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset = 0
        chunk = head
        try:
            while chunk:
                decoder.decode(chunk)
                offset += len(chunk)
                chunk = f.read(1 << 20)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise InputError(
                f"data file is not UTF-8 text (invalid byte near offset {offset + exc.start}): "
                "save it as UTF-8 CSV or Parquet"
            ) from None
    return "csv"


def _names(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(quote_user(n) for n in names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"[{shown}]{more}"


def _id_checks(column: str, kind: str) -> tuple[str, str]:
    """(SQL value of the normalised id, SQL reason it is rejected or NULL) for ``kind``."""
    col = f"trim(CAST({_quote(column)} AS VARCHAR), {_TRIM})"
    if kind == "email":
        norm = f"lower({col})"
        bad = (
            f"NOT regexp_full_match({norm}, {_sql_str(_EMAIL_RE)}) OR length({norm}) > 254 "
            f"OR regexp_matches({norm}, '\\.[0-9]+$')"
        )
        return f"sha256({norm})", f"CASE WHEN {bad} THEN 'invalid_email' END"
    if kind == "sha256":
        norm = f"lower({col})"
        return norm, f"CASE WHEN NOT regexp_full_match({norm}, '[0-9a-f]{{64}}') THEN 'invalid_sha256' END"
    if kind == "phone":  # parsed in Python (phonenumbers) after this step
        return col, "NULL"
    return f"CAST({_quote(column)} AS VARCHAR)", "NULL"


def check_region(region: str | None) -> str | None:
    """The region (ISO 3166 alpha-2, upper case) phone numbers without ``+`` are read in."""
    if region is None:
        return None
    import phonenumbers

    code = region.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise InputError(f"region {quote_user(region)} is not a known phone region (e.g. FR, US)")
    return code


def e164(text: str, region: str | None) -> str | None:
    """``text`` as an E.164 number (``+33612345678``), or None when it does not parse or is not
    a valid number: without ``region`` only ``+``-prefixed numbers parse."""
    import phonenumbers

    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def valid_email(text: str) -> bool:
    """The email rule of :func:`prepare_dataset`, for one value (same SQL, run in DuckDB)."""
    import duckdb

    _, reason = _id_checks("v", "email")
    con = duckdb.connect()
    try:
        row = con.execute(f"SELECT {reason} FROM (SELECT ? AS v)", [text]).fetchone()
    finally:
        con.close()
    return row is not None and row[0] is None


def prepare_dataset(
    source: Path,
    dataset: Dataset,
    workdir: Path,
    *,
    region: str | None = None,
    strict: bool = False,
    rejects: Path | None = None,
    validate: bool = True,
) -> PreparedDataset:
    """Read ``source`` (CSV or Parquet, told apart by content), check its columns against
    ``dataset.schema``, cast them, validate, normalise and hash the identifier column, and
    write Parquet into ``workdir``.

    Identifier rules (after trimming spaces, tabs and line breaks):

    - ``email``: lower-cased; one ``@``; a local part of 1–64 characters with no space or
      control character; a domain of dot-separated labels of ASCII letters, digits and
      hyphens (1–63 each, no leading or trailing hyphen), at least two labels, the last not all
      digits; at most 254 characters in all. Checked in DuckDB (one regexp), vectorised;
    - ``phone``: parsed by ``phonenumbers`` in ``region`` (none: only ``+``-prefixed numbers),
      must be a valid number; hashed as E.164. Parsed in Python, one value at a time
      (~20k values/s): the only kind that is not vectorised;
    - ``sha256``: lower-cased, 64 hex characters.

    Rows whose identifier is empty or invalid are dropped and counted per reason
    (:data:`REJECT_REASONS`); ``strict`` refuses the file at the first one instead. ``rejects``
    receives ``row,reason`` lines (1-based data rows). ``validate=False`` is for benchmarks
    only (the normalisation without the checks).

    Raises:
        InputError: not CSV/Parquet, not UTF-8, empty, missing/extra columns, values that do
            not fit the declared types, no valid rows, or (``strict``) an invalid identifier.
            Messages name columns, rows and reasons, never values.
    """
    import duckdb

    region = check_region(region)
    fmt = sniff_format(source)
    if fmt == "csv":
        reader = f"read_csv({_sql_str(str(source))}, header=true, all_varchar=true)"
    else:
        reader = f"read_parquet({_sql_str(str(source))})"
    label = f"dataset {dataset.name!r}"
    con = duckdb.connect()
    try:
        con.execute("SET threads TO 2")
        con.execute("SET preserve_insertion_order = true")
        try:
            present = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()]
        except duckdb.Error as exc:
            what = "Parquet" if fmt == "parquet" else "CSV"
            raise InputError(f"data file cannot be read as {what}") from exc
        expected = [c.name for c in dataset.schema]
        missing = [c for c in expected if c not in present]
        extra = [c for c in present if c not in expected]
        if missing or extra:
            raise InputError(
                f"{label}: missing columns {_names(missing)}, unexpected {_names(extra)}"
            )
        try:
            # the table keeps the file's order: rowid + 1 is the data row number
            con.execute(f"CREATE TEMP TABLE raw AS SELECT * FROM {reader}")
        except duckdb.Error as exc:
            raise InputError(f"data file cannot be read as {fmt.upper()}") from exc
        total = _one(con, "SELECT count(*) FROM raw")
        if total == 0:
            raise InputError(f"{label}: the file has a header but no data rows")
        select = ["rowid + 1 AS __row"]
        reason = "NULL"
        for column in dataset.schema:
            name = _quote(column.name)
            if column.name == dataset.id_column:
                value, invalid = _id_checks(column.name, dataset.id_kind)
                if dataset.id_kind != "none":
                    empty = f"trim(CAST({name} AS VARCHAR), {_TRIM})"
                    reason = f"CASE WHEN {name} IS NULL OR {empty} = '' THEN 'empty' ELSE {invalid} END"
                    if not validate:
                        reason = "NULL"
                select.append(f"{value} AS {name}")
            else:
                select.append(f"CAST({name} AS {_DUCK_TYPES[column.type]}) AS {name}")
        select.append(f"{reason} AS __reason")
        try:
            con.execute(f"CREATE TEMP TABLE staged AS SELECT {', '.join(select)} FROM raw")
        except duckdb.Error as exc:
            raise InputError(f"{label}: values do not fit the declared schema") from exc
        con.execute("DROP TABLE raw")
        if dataset.id_kind == "phone":
            _phones(con, _quote(dataset.id_column), region, validate)
        counts = {
            str(r): int(n)
            for r, n in con.execute(
                "SELECT __reason, count(*) FROM staged WHERE __reason IS NOT NULL GROUP BY 1"
            ).fetchall()
        }
        rejected = {r: counts[r] for r in REJECT_REASONS if counts.get(r)}
        if strict and rejected:
            first = con.execute(
                "SELECT __row, __reason FROM staged WHERE __reason IS NOT NULL ORDER BY __row LIMIT 1"
            ).fetchone()
            assert first is not None
            raise InputError(
                f"{label}: row {first[0]}: {first[1]} {dataset.id_column} (--strict; "
                f"{sum(rejected.values())} such rows in all)"
            )
        kept = total - sum(rejected.values())
        if kept == 0:
            raise InputError(f"{label}: no valid rows ({_summary(rejected)})")
        out = workdir / f"{dataset.name}.parquet"
        ident = _quote(dataset.id_column)
        distinct = con.execute(
            f"SELECT count(DISTINCT {ident}) FROM staged WHERE __reason IS NULL"
        ).fetchone()
        one_row_per_person = distinct is not None and int(distinct[0]) == kept
        columns = ", ".join(_quote(c.name) for c in dataset.schema)
        con.execute(
            f"COPY (SELECT {columns} FROM staged WHERE __reason IS NULL) TO "
            f"{_sql_str(str(out))} (FORMAT parquet, COMPRESSION zstd)"
        )
        if rejects is not None:
            con.execute(
                "COPY (SELECT __row AS row, __reason AS reason FROM staged "
                f"WHERE __reason IS NOT NULL ORDER BY __row) TO {_sql_str(str(rejects))} "
                "(FORMAT csv, HEADER true)"
            )
    finally:
        con.close()
    return PreparedDataset(out, kept, rejected, rejects, one_row_per_person)


def _summary(rejected: dict[str, int]) -> str:
    """``3 dropped: empty 1, invalid_email 2``."""
    if not rejected:
        return "nothing dropped"
    return f"{sum(rejected.values())} dropped: " + ", ".join(
        f"{r} {n}" for r, n in rejected.items()
    )


def _one(con: object, query: str) -> int:
    row = con.execute(query).fetchone()  # type: ignore[attr-defined]
    return int(row[0]) if row else 0


def _phones(con: object, idc: str, region: str | None, validate: bool) -> None:
    """Parse the staged phone column with ``phonenumbers`` and hash it as E.164, marking the
    rows that do not parse ``invalid_phone``."""
    import pyarrow as pa

    rows = con.sql(  # type: ignore[attr-defined]
        f"SELECT __row, {idc} AS v FROM staged WHERE __reason IS NULL"
    ).to_arrow_table()
    values = rows.column("v").to_pylist()
    if validate:
        parsed = [e164(v, region) for v in values]
    else:
        parsed = ["+" + "".join(ch for ch in v if ch.isdigit()) for v in values]
    phones = pa.table({"r": rows.column("__row"), "e": pa.array(parsed, pa.string())})
    con.register("phones", phones)  # type: ignore[attr-defined]
    con.execute(  # type: ignore[attr-defined]
        f"UPDATE staged SET {idc} = sha256(phones.e), "
        "__reason = CASE WHEN phones.e IS NULL THEN 'invalid_phone' END "
        "FROM phones WHERE staged.__row = phones.r"
    )
    con.unregister("phones")  # type: ignore[attr-defined]


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class _Progress:
    def __init__(
        self, handle: object, total: int, callback: Callable[[int, int], None] | None
    ) -> None:
        self.handle = handle
        self.total = total
        self.done = 0
        self.callback = callback

    def readinto(self, view: memoryview) -> int:
        n: int = self.handle.readinto(view)  # type: ignore[attr-defined]
        self.done += n
        if self.callback is not None:
            self.callback(self.done, self.total)
        return n

    def read(self, size: int = -1) -> bytes:
        data: bytes = self.handle.read(size)  # type: ignore[attr-defined]
        self.done += len(data)
        return data


def seal_dataset_file(
    plaintext: Path,
    destination: Path,
    worker_encryption_key: bytes,
    *,
    room_id: str,
    manifest_digest: str,
    dataset: str,
    version: int,
    progress: Callable[[int, int], None] | None = None,
) -> SealResult:
    """Seal a prepared file to the worker's encryption key, streaming (memory stays flat).

    The sealed header carries the upload binding (room, manifest, dataset, version). Written
    to a temporary file and renamed, so a crash never leaves a partial sealed file.
    """
    total = plaintext.stat().st_size
    fd, tmp = tempfile.mkstemp(dir=destination.parent, prefix=".sealing-")
    try:
        with open(plaintext, "rb") as src, os.fdopen(fd, "wb") as dst:
            result = seal_stream(
                _Progress(src, total, progress),  # type: ignore[arg-type]
                dst,
                worker_encryption_key,
                upload_binding(room_id, manifest_digest, dataset, version),
            )
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, destination)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return result
