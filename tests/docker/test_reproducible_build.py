"""The worker image builds reproducibly: two builds without cache, from one build context on the
same base, measure the same (the tree digest of sdk.protocol.treedigest), and
``sealroom worker measure`` prints that measurement.

The expensive part of the CI run (two full builds, ~2 minutes on 2 CPUs): the builds run side by
side, from one context assembled once (so that nothing else, like an edit of the working tree
between the two builds, can differ), and everything they leave behind is removed.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from coordinator import images
from coordinator.imagemeasure import _ChunkReader, image_id_of, measure_image
from sdk.protocol.treedigest import tree_listing
from tests.cli.conftest import fails, ok, sealroom
from tests.docker.conftest import _unavailable

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1200)]

BASE = os.environ.get("SEALROOM_IMAGE_BASE", images.OFFLINE_BASE)
TAGS = ("sealroom-worker:pytest-repro-a", "sealroom-worker:pytest-repro-b")
_LAYER = re.compile(r"^ ---> ([0-9a-f]{12,64})$")


def _listing(client: Any, image_id: str) -> list[str]:
    """The canonical listing of an image, for a readable diff when the digests differ."""
    _, config = image_id_of(client, image_id)
    container = client.api.create_container(image_id, entrypoint=["/x"],
                                            network_disabled=True)["Id"]
    try:
        with io.BufferedReader(_ChunkReader(client.api.export(container))) as stream:
            return tree_listing(stream, config=config).decode("ascii").splitlines()
    finally:
        client.api.remove_container(container, force=True)


def _first_differences(a: list[str], b: list[str], n: int = 20) -> str:
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    return ("\n".join(f"- {line}" for line in only_a[:n]) + "\n"
            + "\n".join(f"+ {line}" for line in only_b[:n]))


@pytest.fixture
def base_image(docker_client: Any) -> str:
    import docker.errors

    try:
        docker_client.api.inspect_image(BASE)
    except docker.errors.ImageNotFound:
        _unavailable(f"base image {BASE} is not there (images/base/build.sh)")
    return BASE


def test_two_builds_without_cache_measure_the_same(docker_client: Any, base_image: str,
                                                   tmp_path: Path) -> None:
    lock = images.prepare_wheels(images.WORKER, log=lambda line: None)
    context = images.assemble_context(lock, images.WORKER, out_dir=tmp_path / "context")
    cache = tmp_path / "cache" / "sealroom" / "measurements.json"
    built: dict[str, str] = {}
    measured: dict[str, str] = {}
    layers: set[str] = set()
    errors: list[BaseException] = []

    def log(line: str) -> None:
        if match := _LAYER.match(line):
            layers.add(match.group(1))

    def build_and_measure(tag: str) -> None:
        try:
            built[tag] = images.docker_build(context, base=base_image, tag=tag,
                                             client=docker_client, nocache=True,
                                             build_args=images.build_args_for(images.WORKER),
                                             log=log)
            measured[tag] = measure_image(docker_client, built[tag], cache_path=cache)
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=build_and_measure, args=(tag,)) for tag in TAGS]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        a, b = (built[tag] for tag in TAGS)
        assert a != b, "the second build came from the cache"  # the engine's ids differ...
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", measured[TAGS[0]])
        if measured[TAGS[0]] != measured[TAGS[1]]:  # ...the measurements must not
            diff = _first_differences(_listing(docker_client, a), _listing(docker_client, b))
            pytest.fail(f"two builds of one context measure differently:\n{diff}")

        # what a party runs on its rebuild (the measurement is cached by then: a quick call)
        env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
        out = ok(sealroom("worker", "measure", TAGS[1], env=env, timeout=300)).out
        assert f"measurement  {measured[TAGS[1]]}" in out
        doc = json.loads(ok(sealroom("worker", "measure", TAGS[0], "--json", env=env)).out)
        assert doc["measurement"] == measured[TAGS[0]] and doc["docker_image_id"] == a
    finally:
        for thread in threads:
            thread.join()
        for ref in (*TAGS, *sorted(layers)):  # the tags, then the install stage left dangling
            try:
                docker_client.api.remove_image(ref, force=False)
            except Exception:  # noqa: S110 - gone with its child, or shared: leave it
                pass


def test_measuring_a_missing_image_is_one_input_error(docker_client: Any) -> None:
    res = fails(sealroom("worker", "measure", "sealroom-worker:pytest-no-such-tag", timeout=120),
                "E_INPUT")
    assert "'sealroom-worker:pytest-no-such-tag' not found" in res.err
