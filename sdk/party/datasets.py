"""Preparing a party's dataset for upload: read CSV/Parquet, check it against the manifest's
schema, normalise and hash identifiers, write Parquet, and seal it to the worker.

Identifier normalisation (DESIGN §5 step 3), vectorised in DuckDB:

- ``email``: trim, lowercase, SHA-256 (hex);
- ``phone``: keep digits, ``00`` prefix → international, no prefix → the default country code,
  then ``+`` and the digits (E.164), SHA-256 (hex);
- ``sha256``: already hashed; must be 64 lowercase hex characters.

Requires the ``party`` extra (pyarrow, duckdb); imported lazily so that verifying receipts
never needs them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sdk.errors import InputError
from sdk.protocol.models import Dataset
from sdk.protocol.sealing import SealResult, seal_stream, upload_binding

_DUCK_TYPES = {
    "string": "VARCHAR",
    "int": "BIGINT",
    "float": "DOUBLE",
    "bool": "BOOLEAN",
    "date": "DATE",
}


@dataclass(frozen=True)
class PreparedDataset:
    """A normalised Parquet file ready to seal."""

    path: Path
    row_count: int


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _id_expression(column: str, kind: str, country_code: str) -> str:
    col = _quote(column)
    if kind == "email":
        return f"sha256(lower(trim(CAST({col} AS VARCHAR))))"
    if kind == "phone":
        digits = f"regexp_replace(CAST({col} AS VARCHAR), '[^0-9+]', '', 'g')"
        e164 = (
            f"CASE WHEN {digits} LIKE '+%' THEN '+' || replace({digits}, '+', '') "
            f"WHEN {digits} LIKE '00%' THEN '+' || substr({digits}, 3) "
            f"ELSE '+{country_code}' || ltrim({digits}, '0') END"
        )
        return f"sha256({e164})"
    if kind == "sha256":
        return f"lower(CAST({col} AS VARCHAR))"
    return f"CAST({col} AS VARCHAR)"


def prepare_dataset(
    source: Path,
    dataset: Dataset,
    workdir: Path,
    *,
    country_code: str = "1",
) -> PreparedDataset:
    """Read ``source`` (CSV or Parquet), check its columns against ``dataset.schema``, cast
    them, normalise and hash the identifier column, and write Parquet into ``workdir``.

    Raises:
        InputError: missing/extra columns, values that do not fit the declared types, null or
            malformed identifiers. Messages name columns, never values.
    """
    import duckdb

    if not country_code.isdigit():
        raise InputError("country code must be digits")
    suffix = source.suffix.lower()
    if suffix == ".csv":
        reader = f"read_csv({_sql_str(str(source))}, header=true, all_varchar=true)"
    elif suffix in (".parquet", ".pq"):
        reader = f"read_parquet({_sql_str(str(source))})"
    else:
        raise InputError("dataset file must be .csv or .parquet")
    con = duckdb.connect()
    try:
        con.execute("SET threads TO 2")
        try:
            present = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()]
        except duckdb.Error as exc:
            raise InputError("dataset file cannot be read as CSV/Parquet") from exc
        expected = [c.name for c in dataset.schema]
        missing = [c for c in expected if c not in present]
        extra = [c for c in present if c not in expected]
        if missing or extra:
            raise InputError(
                f"dataset {dataset.name!r}: missing columns {missing}, unexpected {extra}"
            )
        select = []
        for column in dataset.schema:
            if column.name == dataset.id_column:
                select.append(
                    f"{_id_expression(column.name, dataset.id_kind, country_code)} AS {_quote(column.name)}"
                )
            else:
                select.append(
                    f"CAST({_quote(column.name)} AS {_DUCK_TYPES[column.type]}) AS {_quote(column.name)}"
                )
        out = workdir / f"{dataset.name}.parquet"
        query = f"SELECT {', '.join(select)} FROM {reader}"
        try:
            con.execute(f"CREATE TEMP TABLE prepared AS {query}")
        except duckdb.Error as exc:
            raise InputError(
                f"dataset {dataset.name!r}: values do not fit the declared schema"
            ) from exc
        idc = _quote(dataset.id_column)
        bad = con.execute(
            f"SELECT count(*) FROM prepared WHERE {idc} IS NULL OR NOT regexp_full_match({idc}, '[0-9a-f]{{64}}')"
        ).fetchone()
        if dataset.id_kind != "none" and bad and bad[0]:
            raise InputError(
                f"dataset {dataset.name!r}: {bad[0]} rows with a missing or malformed identifier"
            )
        con.execute(f"COPY prepared TO {_sql_str(str(out))} (FORMAT parquet, COMPRESSION zstd)")
        count = con.execute("SELECT count(*) FROM prepared").fetchone()
    finally:
        con.close()
    return PreparedDataset(out, int(count[0]) if count else 0)


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
