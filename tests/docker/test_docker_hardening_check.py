"""T38: each weakened setting is refused (E_CONFIG) after a real ``inspect``, before hand-over.

The launcher's test-only ``_mutate_create_kwargs`` hook weakens one create argument; the engine
creates the container; the check must read the weakness back from ``inspect`` and refuse before
any secret is written or the container is started.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from docker.types import LogConfig, Mount

import coordinator.launchers.docker as docker_launcher
from coordinator.launchers import HardeningError

pytestmark = pytest.mark.docker

Mutation = Callable[[dict[str, Any], Path], None]


def _extra_mount(writable: bool, source: str | None = None) -> Mutation:
    def mutate(kw: dict[str, Any], tmp: Path) -> None:
        src = source or str(tmp / "extra")
        if source is None:
            (tmp / "extra").mkdir(exist_ok=True)
        kw["mounts"] = [*kw["mounts"], Mount(target="/extra", source=src, type="bind",
                                             read_only=not writable)]
    return mutate


MUTATIONS: dict[str, Mutation] = {
    "network bridge": lambda kw, _: kw.update(network_mode="bridge"),
    "network host": lambda kw, _: kw.update(network_mode="host"),
    "writable root": lambda kw, _: kw.update(read_only=False),
    "added capability": lambda kw, _: kw.update(cap_add=["NET_RAW"]),
    "capabilities kept": lambda kw, _: kw.update(cap_drop=["MKNOD"]),
    "seccomp unconfined": lambda kw, _: kw.update(
        security_opt=["no-new-privileges", "seccomp=unconfined"]),
    "apparmor unconfined": lambda kw, _: kw.update(
        security_opt=["no-new-privileges", "apparmor=unconfined"]),
    "no-new-privileges missing": lambda kw, _: kw.update(security_opt=[]),
    "privileged": lambda kw, _: kw.update(privileged=True),
    "no pids limit": lambda kw, _: kw.pop("pids_limit"),
    "pids limit too high": lambda kw, _: kw.update(pids_limit=100_000),
    "swap over memory": lambda kw, _: kw.update(memswap_limit=kw["mem_limit"] * 2),
    "no memory limit": lambda kw, _: [kw.pop("mem_limit"), kw.pop("memswap_limit")],
    "no cpu limit": lambda kw, _: kw.pop("nano_cpus"),
    "extra writable mount": _extra_mount(writable=True),
    "extra read-only mount": _extra_mount(writable=False),
    "docker socket": _extra_mount(writable=False, source="/var/run/docker.sock"),
    "root user": lambda kw, _: kw.update(user="0:0"),
    "tmpfs exec": lambda kw, _: kw.update(tmpfs={"/tmp": "rw,exec,nosuid,nodev,size=64m"}),
    "tmpfs unbounded": lambda kw, _: kw.update(tmpfs={"/tmp": "rw,noexec,nosuid,nodev"}),
    "extra tmpfs": lambda kw, _: kw.update(tmpfs={**kw["tmpfs"], "/var": "rw,size=8m"}),
    "host pid namespace": lambda kw, _: kw.update(pid_mode="host"),
    "host ipc namespace": lambda kw, _: kw.update(ipc_mode="host"),
    "environment added": lambda kw, _: kw.update(
        environment={"SEALROOM_DATABASE_URL": "postgresql://x"}),
    "json-file logs": lambda kw, _: kw.update(log_config=LogConfig(type="json-file")),
    "core dumps allowed": lambda kw, _: kw.update(
        ulimits=[u for u in kw["ulimits"] if u["Name"] != "core"]),
    "supplementary group": lambda kw, _: kw.update(group_add=["0"]),
    "oom killer disabled": lambda kw, _: kw.update(oom_kill_disable=True),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_t38_weakened_setting_refused_before_hand_over(
        name: str, probe_launcher: Any, job_dir: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    handed_over: list[object] = []
    real_write = docker_launcher.write_secrets

    def spy(*args: Any, **kwargs: Any) -> None:
        handed_over.append(args)
        real_write(*args, **kwargs)

    monkeypatch.setattr(docker_launcher, "write_secrets", spy)
    launcher = probe_launcher(
        _mutate_create_kwargs=lambda kw: MUTATIONS[name](kw, tmp_path))
    with pytest.raises(HardeningError) as info:
        launcher.launch(job_dir, ["isolation"], {"worker.key": b"k"}, deadline_s=30)
    assert info.value.code == "E_CONFIG"
    assert info.value.deviations
    assert handed_over == []
    assert list((job_dir / "secrets").iterdir()) == []


def test_t38_unmodified_profile_passes_the_same_check(
        probe_launcher: Any, job_dir: Path) -> None:
    """Control: the same path without a mutation hands over and runs."""
    result = probe_launcher(_mutate_create_kwargs=lambda kw: None).launch(
        job_dir, ["bigout", "0"], {"worker.key": b"k"}, deadline_s=30)
    assert result.exit_code == 0
    assert result.settings["network_mode"] == "none"


def test_runtime_required_but_not_used_is_refused(
        probe_launcher: Any, job_dir: Path) -> None:
    """T39 (refusal half): a profile that requires gVisor never falls back to runc."""
    from coordinator.launchers import HardeningProfile

    launcher = probe_launcher(
        HardeningProfile(runtime="runsc"),
        _mutate_create_kwargs=lambda kw: kw.update(runtime="runc"))
    with pytest.raises(HardeningError) as info:
        launcher.launch(job_dir, ["bigout", "0"], deadline_s=30)
    assert any("runtime" in d for d in info.value.deviations)


def test_reaper_removes_orphans_by_label(docker_client: Any, worker_image: str) -> None:
    from coordinator.launchers import reap_orphans

    labels = {"sealroom.owner": "sealroom", "sealroom.run_id": "orphan",
              "sealroom.instance": "pytest-reaper"}
    keep = {**labels, "sealroom.run_id": "in-flight"}
    orphan = docker_client.api.create_container(worker_image, command=["x"], labels=labels)
    alive = docker_client.api.create_container(worker_image, command=["x"], labels=keep)
    other = docker_client.api.create_container(worker_image, command=["x"],
                                               labels={"app": "not-ours"})
    try:
        removed = reap_orphans(docker_client, instance="pytest-reaper",
                               keep_run_ids={"in-flight"})
        assert removed == [orphan["Id"]]
        assert reap_orphans(docker_client, instance="pytest-reaper") == [alive["Id"]]
        docker_client.api.inspect_container(other["Id"])  # untouched
    finally:
        for c in (orphan, alive, other):
            try:
                docker_client.api.remove_container(c["Id"], force=True)
            except Exception:
                pass
