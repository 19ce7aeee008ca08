"""Runs: their state, each receipt with a verified or failed badge, and for a recipient the
result as a table and a chart, with CSV and Parquet downloads.

A run's page does what ``sealroom result get`` does, with the same functions: fetch the
receipt and this party's sealed output, verify the receipt (attested worker, room, output
digests, log inclusion, consistency with the verified log and the last checkpoint seen here;
:func:`sdk.party.results.fetch_verified_receipt`), decrypt (:func:`decrypt_output`), decode
(:func:`decode_result`); downloads are written by :func:`write_result`.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from markupsafe import Markup

from sdk.errors import SealroomError
from sdk.party.results import decode_result, decrypt_output, fetch_verified_receipt, write_result
from sdk.party.trust import load_room
from sdk.party.ui.charts import bar_chart
from sdk.party.ui.render import Response, download
from sdk.party.ui.request import Request
from sdk.party.ui.state import bundle_titles, room_runs, snapshot
from sdk.protocol.verify import VerifiedReceipt

FORMATS = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}
MAX_CHARTED = 40
DIGEST = re.compile(r"[0-9a-f]{64}")
MAX_SHOWN = 500
INTERVAL = ("ci95_low", "ci95_high")


def runs_page(req: Request) -> Response:
    """GET /runs"""
    snap = snapshot(req.session, req.room_id)
    runs = room_runs(req.session, snap)
    digests = [str(r.listed.get("bundle_digest", "")) for r in runs]
    titles = bundle_titles(req.session, snap, [d for d in digests if DIGEST.fullmatch(d)])
    return req.page("runs.html", "runs", snap=snap, runs=runs, titles=titles)


@dataclass
class Result:
    """A decrypted, verified result."""

    columns: list[str]
    rows: list[list[Any]]
    meta: dict[str, Any]


def _float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def numeric_columns_of(result: Result) -> list[int]:
    """The columns whose every value is a number (or nothing), at least one a number."""
    rows = result.rows
    return [
        i
        for i in range(len(result.columns))
        if any(r[i] is not None for r in rows)
        and all(r[i] is None or _float(r[i]) is not None for r in rows)
    ]


def result_charts(result: Result) -> list[Markup]:
    """A bar chart per numeric column (at most three), labelled by the first text column (or
    the row number); a template's 95% interval columns are drawn as whiskers."""
    columns, rows = result.columns, result.rows[:MAX_CHARTED]
    numeric = numeric_columns_of(Result(columns, rows, result.meta))
    text = [i for i in range(len(columns)) if i not in numeric]
    labels = [str(r[text[0]]) if text else str(n + 1) for n, r in enumerate(rows)]
    interval = [columns.index(c) for c in INTERVAL if c in columns]
    charts: list[Markup] = []
    for i in [i for i in numeric if columns[i] not in INTERVAL][:3]:
        whiskers = None
        if len(interval) == 2 and not charts:
            whiskers = [(_float(r[interval[0]]), _float(r[interval[1]])) for r in rows]
        by = columns[text[0]] if text else "row"
        title = f"{columns[i]} by {by}" + (" (95% interval)" if whiskers else "")
        charts.append(
            bar_chart(labels, [_float(r[i]) for r in rows], title=title, intervals=whiskers)
        )
    return charts


def _fetch(
    req: Request, run_id: str, *, with_output: bool
) -> tuple[VerifiedReceipt, Result | None]:
    room = load_room(req.session, req.room_id)
    rfile, verified = fetch_verified_receipt(req.session, room, run_id, with_output=with_output)
    receipt = verified.receipt
    if not with_output or receipt.status != "succeeded":
        return verified, None
    columns, rows, meta = decode_result(decrypt_output(req.session, room, rfile, receipt))
    return verified, Result(columns, rows, meta)


def run_page(req: Request, run_id: str) -> Response:
    """GET /runs/RUN"""
    listed = dict(req.session.client().run(req.room_id, run_id))
    mine = req.me in (listed.get("recipients") or [])
    verified: VerifiedReceipt | None = None
    result: Result | None = None
    error: str | None = None
    if listed.get("has_receipt") or listed.get("log_index") is not None:
        try:
            verified, result = _fetch(req, run_id, with_output=mine)
        except SealroomError as exc:
            error = exc.diagnostics()
    charts = result_charts(result) if result is not None else []
    numeric_columns = [] if result is None else numeric_columns_of(result)
    return req.page(
        "run.html",
        "runs",
        listed=listed,
        run_id=run_id,
        verified=verified,
        result=result,
        error=error,
        charts=charts,
        mine=mine,
        numeric_columns=numeric_columns,
        max_shown=MAX_SHOWN,
    )


def download_result(req: Request, run_id: str, fmt: str) -> Response:
    """GET /runs/RUN/result.csv (or .parquet)"""
    try:
        verified, result = _fetch(req, run_id, with_output=True)
    except SealroomError as exc:
        return req.page("refused.html", "runs", HTTPStatus.BAD_GATEWAY, message=exc.diagnostics())
    if result is None:
        return req.page(
            "refused.html",
            "runs",
            HTTPStatus.NOT_FOUND,
            message=f"run {run_id} has no result ({verified.receipt.status})",
        )
    with tempfile.TemporaryDirectory(prefix="sealroom-ui-") as tmp:
        path = Path(tmp) / f"result.{fmt}"
        write_result(path, result.columns, result.rows)
        data = path.read_bytes()
    return download(data, f"{req.room_id}-{run_id}.{fmt}", FORMATS[fmt])
