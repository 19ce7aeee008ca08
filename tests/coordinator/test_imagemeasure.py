"""Measuring an image (coordinator.imagemeasure) against a fake engine: the tree digest of the
export, the container always removed, the caches (in process, on disk, corrupt files ignored),
typed one-line errors; and the DockerLauncher's measurement next to its Docker id."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

docker_errors = pytest.importorskip("docker.errors")

from coordinator import imagemeasure  # noqa: E402
from coordinator.launchers import DockerLauncher, EngineUnavailableError, ProcessLauncher  # noqa: E402
from coordinator.worker import worker_measurement_id  # noqa: E402
from sdk.errors import ConfigError, InputError  # noqa: E402
from sdk.protocol.treedigest import FORMAT, tree_digest  # noqa: E402

IMAGE_ID = "sha256:" + "ab" * 32
CONFIG = {"Entrypoint": ["/opt/venv/bin/python", "-I", "-m", "enclave"], "User": "65534:65534",
          "Env": ["LANG=C.UTF-8"]}


def export_tar(content: bytes = b"print('worker')\n") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name in (".dockerenv", "etc/hosts"):
            tf.addfile(tarfile.TarInfo(name))
        info = tarfile.TarInfo("opt/sealroom/lib/enclave/__main__.py")
        info.size = len(content)
        tf.addfile(info, io.BytesIO(content))
    return buf.getvalue()


class FakeAPI:
    def __init__(self, tar: bytes, *, fail_export: bool = False) -> None:
        self.tar = tar
        self.fail_export = fail_export
        self.calls: list[str] = []
        self.created: list[dict[str, Any]] = []
        self.removed: list[str] = []

    def inspect_image(self, ref: str) -> dict[str, Any]:
        self.calls.append(f"inspect {ref}")
        if ref not in ("sealroom-worker:latest", IMAGE_ID):
            raise docker_errors.ImageNotFound("no such image")
        return {"Id": IMAGE_ID, "Config": CONFIG}

    def create_container(self, image: str, **kwargs: Any) -> dict[str, str]:
        self.calls.append(f"create {image}")
        self.created.append(kwargs)
        return {"Id": "c0ffee"}

    def export(self, container: str, chunk_size: int = 0) -> Any:
        self.calls.append(f"export {container}")
        if self.fail_export:
            raise docker_errors.APIError("export broke", explanation="export broke")
        data = self.tar
        return (data[i:i + 700] for i in range(0, len(data), 700))

    def remove_container(self, container: str, **kwargs: Any) -> None:
        self.removed.append(container)


class FakeClient:
    def __init__(self, tar: bytes | None = None, **kwargs: Any) -> None:
        self.api = FakeAPI(export_tar() if tar is None else tar, **kwargs)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    imagemeasure.forget()
    yield tmp_path / "cache"
    imagemeasure.forget()


def expected(content: bytes = b"print('worker')\n") -> str:
    return tree_digest(io.BytesIO(export_tar(content)), config=CONFIG)


def test_the_measurement_is_the_tree_digest_of_the_export(cache_dir: Path) -> None:
    client = FakeClient()
    assert imagemeasure.measure_image(client, "sealroom-worker:latest") == expected()
    assert expected() != IMAGE_ID
    kwargs = client.api.created[0]
    assert kwargs["network_disabled"] is True and kwargs["entrypoint"] != CONFIG["Entrypoint"]
    assert client.api.removed == ["c0ffee"]
    assert imagemeasure.cache_file() == cache_dir / "sealroom" / "measurements.json"


def test_cached_in_process_then_on_disk(cache_dir: Path) -> None:
    client = FakeClient()
    first = imagemeasure.measure_image(client, "sealroom-worker:latest")
    assert imagemeasure.measure_image(client, IMAGE_ID) == first
    assert imagemeasure.measure_image(client, "sealroom-worker:latest") == first
    assert [c for c in client.api.calls if c.startswith("export")] == ["export c0ffee"]
    assert client.api.calls.count(f"inspect {IMAGE_ID}") == 0  # an id measured before: no call
    doc = json.loads(imagemeasure.cache_file().read_text())
    assert doc == {"format": FORMAT, "measurements": {IMAGE_ID: first}}

    imagemeasure.forget()  # a new process: the disk cache answers
    again = FakeClient(export_tar(b"other content"))
    assert imagemeasure.measure_image(again, "sealroom-worker:latest") == first
    assert not any(c.startswith("export") for c in again.api.calls)
    assert imagemeasure.measure_image(again, IMAGE_ID, use_cache=False) == expected(b"other content")


@pytest.mark.parametrize("garbage", [b"{not json", b"[]", b'{"format": "other", "measurements": {}}',
                                     json.dumps({"format": FORMAT, "measurements": {
                                         IMAGE_ID: "sha256:short"}}).encode()])
def test_a_corrupt_cache_is_ignored_and_rewritten(garbage: bytes) -> None:
    path = imagemeasure.cache_file()
    path.parent.mkdir(parents=True)
    path.write_bytes(garbage)
    client = FakeClient()
    assert imagemeasure.measure_image(client, IMAGE_ID) == expected()
    assert json.loads(path.read_text())["measurements"] == {IMAGE_ID: expected()}
    assert not list(path.parent.glob(".measurements.*"))  # no temporary file left


def test_an_unwritable_cache_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # a file where a directory should be
    assert imagemeasure.measure_image(FakeClient(), IMAGE_ID) == expected()


def test_the_cache_keeps_the_newest_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imagemeasure, "MAX_CACHED", 3)
    path = imagemeasure.cache_file()
    for i in range(5):
        imagemeasure._remember(path, f"sha256:{i:064x}", "sha256:" + f"{i}" * 64)
    assert list(imagemeasure._read_cache(path)) == [f"sha256:{i:064x}" for i in (2, 3, 4)]


def test_errors_are_one_line_and_typed() -> None:
    with pytest.raises(InputError, match="'nope:latest' not found"):
        imagemeasure.measure_image(FakeClient(), "nope:latest")
    client = FakeClient(fail_export=True)
    with pytest.raises(ConfigError, match="cannot export"):
        imagemeasure.measure_image(client, IMAGE_ID)
    assert client.api.removed == ["c0ffee"]
    truncated = FakeClient(export_tar()[:600])
    with pytest.raises(InputError, match="image tree"):
        imagemeasure.measure_image(truncated, IMAGE_ID)
    assert truncated.api.removed == ["c0ffee"]
    assert not imagemeasure.cache_file().exists()  # nothing cached from a failure


def test_no_engine_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(ConfigError, match="no Docker engine answers"):
        imagemeasure.connect(timeout=2)


def test_the_docker_launcher_runs_by_id_and_measures_by_tree() -> None:
    client = FakeClient()
    launcher = DockerLauncher("sealroom-worker:latest", client=client)
    assert launcher.image_id_and_env() == (IMAGE_ID, ["LANG=C.UTF-8"])  # the engine's handle
    assert launcher.measurement_id() == expected()  # what attestations name
    assert worker_measurement_id(launcher) == expected()
    assert worker_measurement_id(ProcessLauncher()) == "unisolated"
    missing = DockerLauncher("nope:latest", client=client)
    with pytest.raises(EngineUnavailableError, match="not built"):
        missing.measurement_id()


def test_what_ran_is_measured_by_the_id_it_ran() -> None:
    from coordinator.launchers import LaunchResult

    launcher = DockerLauncher("sealroom-worker:latest", client=FakeClient())
    result = LaunchResult(exit_code=0, stdout=b"", oom_killed=False, timed_out=False,
                          isolation="container", settings_digest="0" * 64, duration=0.0,
                          image_id=IMAGE_ID)
    assert launcher.ran_measurement(result) == expected()
    other = LaunchResult(**{**result.__dict__, "image_id": "sha256:" + "cd" * 32})
    with pytest.raises(EngineUnavailableError, match="not built"):  # gone, or never measured
        launcher.ran_measurement(other)
    assert ProcessLauncher().ran_measurement(result) == "unisolated"
