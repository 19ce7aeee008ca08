"""Rules about the code's shape that import-linter cannot see (ADR 0006).

* The library under the CLI never prints: no ``print``, ``input``, ``getpass`` or
  ``sys.stdout``/``sys.stderr`` in ``sdk.party``, ``sdk.protocol`` or ``sdk.client``.
* The SDK never reaches up into the coordinator or the enclave, not even through a string
  handed to ``importlib`` (import-linter sees only static imports).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIBRARY = [p for d in ("sdk/party", "sdk/protocol") for p in sorted((REPO / d).rglob("*.py"))]
LIBRARY.append(REPO / "sdk" / "client.py")
SDK = sorted((REPO / "sdk").rglob("*.py"))
SPEAKING_CALLS = {"print", "input", "getpass", "breakpoint"}


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("path", LIBRARY, ids=_rel)
def test_the_library_never_prints(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else (
                func.attr if isinstance(func, ast.Attribute) else "")
            if name in SPEAKING_CALLS:
                found.append(f"{name}() at line {node.lineno}")
        if (isinstance(node, ast.Attribute) and node.attr in ("stdout", "stderr", "stdin")
                and isinstance(node.value, ast.Name) and node.value.id == "sys"):
            found.append(f"sys.{node.attr} at line {node.lineno}")
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names]
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if "getpass" in names or module == "getpass":
                found.append(f"imports getpass at line {node.lineno}")
    assert not found, f"{_rel(path)} speaks to the terminal: {found}"


@pytest.mark.parametrize("path", SDK, ids=_rel)
def test_the_sdk_names_no_upper_package_in_strings(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bad = [
        f"{node.value!r} at line {node.lineno}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        and node.value.split(".")[0] in ("coordinator", "enclave")
        and (node.value.count(".") >= 1 or node.value in ("coordinator", "enclave"))
        and " " not in node.value
    ]
    assert not bad, f"{_rel(path)} names a module above the SDK: {bad}"
