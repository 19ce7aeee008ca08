"""``sealroom demo`` as a user runs it (a real process, its own embedded coordinator process),
shrunk to a few thousand rows and the process launcher so it fits in ``make test``."""

from __future__ import annotations

import os
import re

import pytest

from coordinator.cli.demo import WORKER_IMAGE, docker_ready
from tests.cli.conftest import ok, sealroom


def test_demo_runs_the_whole_study(tmp_path) -> None:
    res = ok(sealroom("demo", "--rows", "4000", "--launcher", "process", "--workdir",
                      str(tmp_path / "demo"), timeout=900))
    out = res.out
    assert "UNISOLATED process launcher" in out
    assert re.search(r"measurement +image unisolated\n", out)
    assert re.search(r"error: E_SIGNATURE: .*publisher", out)  # the refusal is shown on purpose
    for figure in ("left_match_rate", "right_match_rate", "absolute_lift", "relative_lift"):
        assert figure in out, figure
    assert len(re.findall(r"receipt of run \S+ in room brand-x-publisher: VALID", out)) == 2
    assert out.count("log VERIFIED") == 2  # the publisher online, the auditor offline
    assert "receipts    2 of 2 verified and included" in out
    assert "the whole study took" in out
    assert "Traceback" not in res.err
    # issue 10: a preview before the uploads, the drops, the pins and the measured match rate
    assert "in common: 1500 (37.5% of yours, 30.0% of publisher's)" in out
    assert re.search(r"\d+ rows dropped at seal time \(empty: \d+, invalid_email: \d+\)", out)
    assert re.search(r"reads customers: version 1 \(upload [0-9a-f]{12}\)", out)
    assert re.search(r"match rate of customers \(brand\): 0\.\d{4}", out)
    assert re.search(r"match rate of\s+owner\s+against", out)  # room status


@pytest.mark.docker
def test_demo_with_hardened_docker_workers(tmp_path) -> None:
    """The default path of ``make demo``: a fresh hardened container per run."""
    reason = docker_ready(WORKER_IMAGE)
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the docker demo cannot run: {reason}", pytrace=False)
        pytest.skip(f"no Docker engine with {WORKER_IMAGE}: {reason}")
    res = ok(sealroom("demo", "--rows", "20000", "--launcher", "docker", "--workdir",
                      str(tmp_path / "demo"), timeout=900))
    assert "UNISOLATED" not in res.out
    assert "isolation container" in res.out
    # the measurement is the image's tree digest, and the demo says how to reproduce it
    assert re.search(r"measurement +image sha256:[0-9a-f]{64} \(a rebuild reproduces it: "
                     r"rebuild with `sealroom worker build` and check with "
                     r"`sealroom worker measure \S+`\)", res.out), res.out
    assert len(re.findall(r": VALID", res.out)) == 2 and "log VERIFIED" in res.out
