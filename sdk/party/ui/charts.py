"""Charts as server-generated inline SVG: no script, no inline style (colours and line styles
are classes of the vendored ``ui.css``), every label escaped.

Each function returns ``markupsafe.Markup`` (already escaped SVG) for a template to insert.
SVG elements are not scripts: with ``default-src 'none'`` a chart cannot run anything, and its
text comes from :func:`_text`, which escapes whatever it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape

from markupsafe import Markup

WIDTH = 560
PALETTE = 6  # series-0 .. series-5 in ui.css


@dataclass(frozen=True)
class Series:
    """A named line: (time, value) points in time order."""

    name: str
    points: Sequence[tuple[datetime, float]]


def _text(x: float, y: float, text: str, cls: str = "label", anchor: str = "start") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" class="{cls}" text-anchor="{anchor}">{escape(text)}</text>'
    )


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.3g}"


def _svg(width: int, height: int, body: list[str], title: str) -> Markup:
    return Markup(  # noqa: S704 - every piece of text in body went through escape()
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>" + "".join(body) + "</svg>"
    )


def _time_axis(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    if end <= start:
        return start - timedelta(minutes=30), end + timedelta(minutes=30)
    pad = (end - start) * 0.05
    return start - pad, end + pad


def _time_label(moment: datetime, span: timedelta) -> str:
    if span <= timedelta(hours=2):
        return moment.strftime("%H:%M:%S")
    if span <= timedelta(days=2):
        return moment.strftime("%m-%d %H:%M")
    return moment.strftime("%Y-%m-%d")


def time_chart(
    series: Sequence[Series],
    *,
    title: str,
    y_label: str,
    y_max: float | None = None,
    limit: float | None = None,
    limit_label: str = "",
    steps: bool = False,
    connect: bool = True,
    height: int = 240,
) -> Markup:
    """Lines over time (``steps``: a value holds until the next point, as a running total
    does; ``connect=False``: points only), with an optional horizontal ``limit`` (a budget)."""
    left, right, top, bottom = 56, 16, 16, 52
    width = WIDTH
    points = [p for s in series for p in s.points]
    body: list[str] = []
    if not points:
        body.append(_text(width / 2, height / 2, "nothing yet", "empty", "middle"))
        return _svg(width, height, body, title)
    start, end = _time_axis(min(p[0] for p in points), max(p[0] for p in points))
    top_value = max([p[1] for p in points] + [limit or 0.0, y_max or 0.0]) or 1.0
    span = (end - start).total_seconds() or 1.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(moment: datetime) -> float:
        return left + (moment - start).total_seconds() / span * plot_w

    def y(value: float) -> float:
        return top + plot_h - value / top_value * plot_h

    for i in range(5):
        value = top_value * i / 4
        body.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(value):.1f}" '
            f'y2="{y(value):.1f}" class="grid"/>'
        )
        body.append(_text(left - 6, y(value) + 4, _number(value), "tick", "end"))
    for i, anchor in enumerate(("start", "middle", "middle", "end")):
        moment = start + (end - start) * (i / 3)
        body.append(
            _text(x(moment), top + plot_h + 16, _time_label(moment, end - start), "tick", anchor)
        )
    body.append(
        _text(12, top + plot_h / 2, y_label, "axis", "middle").replace(
            "<text ", f'<text transform="rotate(-90 12 {top + plot_h / 2:.1f})" ', 1
        )
    )
    if limit is not None:
        body.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(limit):.1f}" '
            f'y2="{y(limit):.1f}" class="limit"/>'
        )
        body.append(_text(left + plot_w - 4, y(limit) - 4, limit_label, "limit-label", "end"))
    for n, s in enumerate(series):
        cls = f"series-{n % PALETTE}"
        coords: list[tuple[float, float]] = []
        for i, (moment, value) in enumerate(s.points):
            if steps and i:
                coords.append((x(moment), coords[-1][1]))
            coords.append((x(moment), y(value)))
        if steps and coords:
            coords.append((left + plot_w, coords[-1][1]))
        path = " ".join(f"{a:.1f},{b:.1f}" for a, b in coords)
        if connect:
            body.append(f'<polyline points="{path}" class="line {cls}"/>')
        for moment, value in s.points:
            body.append(
                f'<circle cx="{x(moment):.1f}" cy="{y(value):.1f}" r="3" '
                f'class="dot {cls}"><title>{escape(s.name)}: {escape(_number(value))} '
                f"at {escape(moment.strftime('%Y-%m-%d %H:%M:%S'))}</title></circle>"
            )
        lx = left + n * 150
        body.append(f'<rect x="{lx}" y="{height - 18}" width="12" height="4" class="key {cls}"/>')
        body.append(_text(lx + 16, height - 13, s.name, "legend"))
    return _svg(width, height, body, title)


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float | None],
    *,
    title: str,
    unit: str = "",
    intervals: Sequence[tuple[float | None, float | None]] | None = None,
) -> Markup:
    """Horizontal bars, one per label; negative values extend left of the zero line, a
    missing value is marked as such; ``intervals`` (low, high) are drawn as whiskers."""
    row, top, label_w, right = 26, 12, 170, 70
    width = WIDTH
    height = top * 2 + row * max(1, len(labels))
    body: list[str] = []
    if not labels:
        body.append(_text(width / 2, height / 2, "nothing to chart", "empty", "middle"))
        return _svg(width, height, body, title)
    whiskers = list(intervals) if intervals is not None else [(None, None)] * len(labels)
    present = [v for v in values if v is not None]
    present += [v for pair in whiskers for v in pair if v is not None]
    low, high = min([0.0, *present]), max([0.0, *present])
    span = (high - low) or 1.0
    plot_w = width - label_w - right

    def x(value: float) -> float:
        return label_w + (value - low) / span * plot_w

    body.append(
        f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="{top - 4}" '
        f'y2="{height - top + 4}" class="axis-line"/>'
    )
    for i, (label, value, (lo, hi)) in enumerate(zip(labels, values, whiskers, strict=True)):
        y0 = top + i * row
        short = label if len(label) <= 24 else label[:23] + "…"
        body.append(_text(label_w - 8, y0 + 17, short, "tick", "end"))
        if value is None:
            body.append(_text(x(0) + 6, y0 + 17, "no value", "empty"))
            continue
        a, b = sorted((x(0), x(value)))
        cls = "bar negative" if value < 0 else "bar"
        body.append(
            f'<rect x="{a:.1f}" y="{y0 + 5}" width="{max(b - a, 1):.1f}" height="16" '
            f'class="{cls}"><title>{escape(label)}: {escape(_number(value))}'
            f"{escape(unit)}</title></rect>"
        )
        if lo is not None and hi is not None:
            mid = y0 + 13
            body.append(
                f'<line x1="{x(lo):.1f}" x2="{x(hi):.1f}" y1="{mid}" y2="{mid}" class="whisker"/>'
                f'<line x1="{x(lo):.1f}" x2="{x(lo):.1f}" y1="{mid - 5}" y2="{mid + 5}" '
                f'class="whisker"/><line x1="{x(hi):.1f}" x2="{x(hi):.1f}" y1="{mid - 5}" '
                f'y2="{mid + 5}" class="whisker"/>'
            )
        end_x = max(b, x(hi)) if hi is not None else b
        if value < 0:
            body.append(_text(a - 6, y0 + 17, _number(value) + unit, "value", "end"))
        else:
            body.append(_text(end_x + 6, y0 + 17, _number(value) + unit, "value"))
    return _svg(width, height, body, title)


def count_chart(
    buckets: Sequence[tuple[str, int]], *, title: str, y_label: str, height: int = 200
) -> Markup:
    """Vertical bars of counts per period (``buckets`` in time order, labelled)."""
    left, right, top, bottom = 56, 16, 16, 40
    width = WIDTH
    body: list[str] = []
    if not buckets:
        body.append(_text(width / 2, height / 2, "nothing yet", "empty", "middle"))
        return _svg(width, height, body, title)
    top_value = max(1, max(c for _, c in buckets))
    plot_w, plot_h = width - left - right, height - top - bottom
    slot = plot_w / len(buckets)
    for i in range(3):
        value = top_value * i / 2
        yy = top + plot_h - value / top_value * plot_h
        body.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{yy:.1f}" y2="{yy:.1f}" class="grid"/>'
        )
        body.append(_text(left - 6, yy + 4, _number(value), "tick", "end"))
    body.append(
        _text(12, top + plot_h / 2, y_label, "axis", "middle").replace(
            "<text ", f'<text transform="rotate(-90 12 {top + plot_h / 2:.1f})" ', 1
        )
    )
    every = max(1, len(buckets) // 8)
    for i, (label, count) in enumerate(buckets):
        h = count / top_value * plot_h
        bar = min(max(slot * 0.7, 1), 48)
        x0 = left + i * slot + (slot - bar) / 2
        body.append(
            f'<rect x="{x0:.1f}" y="{top + plot_h - h:.1f}" '
            f'width="{bar:.1f}" height="{h:.1f}" class="bar">'
            f"<title>{escape(label)}: {count}</title></rect>"
        )
        if i % every == 0:
            body.append(_text(x0 + bar / 2, top + plot_h + 16, label, "tick", "middle"))
    return _svg(width, height, body, title)
