"""``bundle approve`` and ``bundle revoke`` never sign without a confirmation: on a terminal
they ask, and without one they refuse at once with a typed error unless ``--yes`` is given
(a question nobody can answer must not hang a script)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.cli.conftest import REPO, Result, fails


@pytest.mark.parametrize("verb", ["approve", "revoke"])
def test_without_a_terminal_and_without_yes_nothing_is_asked_or_signed(tmp_path, verb) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sdk.cli",
            "--home",
            str(tmp_path),
            "--coordinator",
            "http://127.0.0.1:9",
            "bundle",
            verb,
            "a" * 64,
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    res = fails(Result(proc.returncode, proc.stdout, proc.stderr), "E_INPUT", 2)
    assert "pass --yes to confirm without a terminal" in res.err
    assert "[y/N]" not in res.err + res.out


def test_yes_is_documented() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sdk.cli", "bundle", "approve", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=True,
    )
    text = " ".join(proc.stdout.split())
    assert "--yes" in text and "when stdin is not a terminal" in text
    assert "asks before it signs" in text
