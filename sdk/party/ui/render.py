"""Answers: HTML pages rendered by Jinja2 with autoescaping on for every template (so a bundle
title, a purpose, code, a group key, a dataset or party name is always text, never markup),
redirects, downloads and the vendored static files.

Templates and static files are package data of :mod:`sdk.party.ui` (``templates/*.html``,
``static/*.css``, ``static/*.svg``); nothing is fetched from anywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from http import HTTPStatus
from importlib.resources import files
from typing import Any

import jinja2

STATIC_TYPES = {"ui.css": "text/css; charset=utf-8", "favicon.svg": "image/svg+xml"}
HTML = "text/html; charset=utf-8"


@dataclass
class Response:
    """What the server sends: status, body, content type and extra headers."""

    status: HTTPStatus
    body: bytes
    content_type: str = HTML
    headers: list[tuple[str, str]] = field(default_factory=list)


@cache
def environment() -> jinja2.Environment:
    """The template environment: package templates, autoescape always, undefined is an error."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sdk.party.ui", "templates"),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["short"] = lambda digest: str(digest)[:12]
    env.filters["num"] = number
    env.tests["numeric"] = numeric
    return env


def number(value: Any) -> str:
    """A decimal or float for display: exact decimals as written, floats to 4 significant
    digits, ``-`` for nothing."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value == value.to_integral() else str(value)
    if isinstance(value, str) and any(c in value for c in ".eE"):
        try:
            value = float(value)
        except ValueError:
            return str(value)
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:.0f}"
        return f"{value:.4g}" if abs(value) >= 1e-4 or value == 0 else f"{value:.2e}"
    return str(value)


def numeric(value: Any) -> bool:
    """Whether a cell is a number (or a decimal string): right-aligned."""
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, int | float | Decimal):
        return True
    try:
        float(str(value))
    except ValueError:
        return False
    return True


def page(template: str, status: HTTPStatus = HTTPStatus.OK, **context: Any) -> Response:
    """Render a page template."""
    body = environment().get_template(template).render(**context)
    return Response(status, body.encode("utf-8"))


def redirect(location: str, *, headers: list[tuple[str, str]] | None = None) -> Response:
    """A 303 See Other to a path of this server."""
    if not location.startswith("/") or location.startswith("//"):
        raise ValueError("redirects stay on this server")
    return Response(
        HTTPStatus.SEE_OTHER,
        b"",
        "text/plain; charset=utf-8",
        [("Location", location), *(headers or [])],
    )


def download(data: bytes, filename: str, content_type: str) -> Response:
    """A file to save (never rendered by the browser)."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in filename)[:120]
    return Response(
        HTTPStatus.OK,
        data,
        content_type,
        [("Content-Disposition", f'attachment; filename="{safe}"')],
    )


def static(name: str) -> Response | None:
    """A vendored static file, or None when there is no such file."""
    kind = STATIC_TYPES.get(name)
    if kind is None:
        return None
    data = files("sdk.party.ui").joinpath("static", name).read_bytes()
    return Response(HTTPStatus.OK, data, kind)
