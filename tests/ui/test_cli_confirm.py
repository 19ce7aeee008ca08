"""On a terminal, ``bundle approve`` shows what it signs (title, digest, datasets, the privacy
cost against the budget left) and asks ``Sign approval of DIGEST? [y/N]``: anything but y/yes
signs nothing; ``y`` signs. Driven through a pseudo-terminal against the real room."""

from __future__ import annotations

import os
import pty
import re
import subprocess

from sdk.party.home import Home
from sdk.party.session import Session
from tests.ui.conftest import REPO, ROOM, UIRoom, cli_argv, cli_env


def _approve_on_a_terminal(
    room: UIRoom, who: str, digest: str, answer: bytes
) -> tuple[int, str, str]:
    env = cli_env()
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            cli_argv(room, who, "bundle", "approve", digest),
            stdin=follower,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        os.write(leader, answer)  # typed ahead: read once the question is asked
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(follower)
        os.close(leader)
    return proc.returncode, out, err


def _publisher_statements(room: UIRoom, digest: str) -> int:
    session = Session(home=Home(room.home("brand")), coordinator=room.url, party="brand", room=ROOM)
    try:
        return sum(
            1
            for a in session.client().approvals(ROOM, digest)
            if b'"party":"publisher"' in a.payload
        )
    finally:
        session.close()


def test_the_terminal_confirmation_shows_the_digest_and_signs_only_on_yes(ui_room: UIRoom) -> None:
    digest = ui_room.digests["reach-2"]
    code, out, err = _approve_on_a_terminal(ui_room, "publisher", digest, b"n\n")
    assert code == 2 and "E_INPUT" in err and "no approval was signed" in err, err
    assert f"Sign approval of {digest}? [y/N]" in err
    assert f"bundle    {digest}" in out and "title     Reach by segment" in out
    assert re.search(r"reads     customers \(owner brand\): version 1 \(upload [0-9a-f]{12}\)",
                     out), out
    assert re.search(r"customers\s+4\s+\S+\s+\S+\s+0\.25\s+\d+", out), out  # cost vs budget
    assert _publisher_statements(ui_room, digest) == 0

    code, out, err = _approve_on_a_terminal(ui_room, "publisher", digest, b"y\n")
    assert code == 0, err
    assert f"publisher approved bundle {digest[:12]}" in out
    assert _publisher_statements(ui_room, digest) == 1
