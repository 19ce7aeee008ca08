"""``sealroom worker build`` and ``sealroom worker measure`` without an engine: one typed line
(the measuring itself, and a missing image, are tests/docker/test_reproducible_build.py)."""

from __future__ import annotations

import pytest

from tests.cli.conftest import fails, sealroom

NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/sealroom-test-docker.sock"}


@pytest.mark.parametrize("args", [("worker", "measure", "sealroom-worker:latest"),
                                  ("worker", "measure", "sealroom-worker:latest", "--json"),
                                  ("worker", "build", "--tag", "sealroom-worker:never")])
def test_no_engine_is_one_config_error(args: tuple[str, ...]) -> None:
    res = fails(sealroom(*args, env=NO_ENGINE, timeout=120), "E_CONFIG")
    assert "no Docker engine answers" in res.err and res.out == ""
