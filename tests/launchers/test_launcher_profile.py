"""The hardening check on synthetic ``inspect`` output (the docker tests use real output)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from coordinator.launchers import HardeningError, HardeningProfile
from coordinator.launchers.base import settings_digest
from coordinator.launchers.profile import DEFAULT_PROFILE, check_container

JOB = Path("/srv/sealroom/jobs/run-1")
IMAGE = "sha256:" + "ab" * 32
IMAGE_ENV = ["PATH=/usr/bin:/bin", "LANG=C.UTF-8", "HOME=/tmp"]


def compliant(profile: HardeningProfile = DEFAULT_PROFILE, job: Path = JOB) -> dict[str, Any]:
    """What Docker 20.10 reports for a container created from ``profile.create_kwargs``."""
    return {
        "Image": IMAGE,
        "AppArmorProfile": "",
        "State": {"Running": False, "StartedAt": "0001-01-01T00:00:00Z"},
        "Config": {"User": profile.user, "Env": list(IMAGE_ENV), "Tty": False},
        "NetworkSettings": {"Networks": {"none": {}}},
        "Mounts": [{"Type": "bind", "Source": str(job), "Destination": "/job", "RW": False}],
        "HostConfig": {
            "NetworkMode": "none", "ReadonlyRootfs": True, "Privileged": False,
            "CapAdd": None, "CapDrop": ["ALL"], "SecurityOpt": ["no-new-privileges"],
            "PidsLimit": profile.pids_limit, "Memory": profile.memory_bytes,
            "MemorySwap": profile.memory_bytes, "NanoCpus": profile.nano_cpus,
            "ShmSize": profile.shm_bytes, "IpcMode": "private", "PidMode": "", "UTSMode": "",
            "UsernsMode": "", "CgroupParent": "", "Runtime": profile.runtime,
            "OomKillDisable": False, "OomScoreAdj": profile.oom_score_adj,
            "Tmpfs": {"/tmp": profile.tmpfs_options},
            "Ulimits": [{"Name": n, "Soft": v, "Hard": v} for n, v in profile.ulimits().items()],
            "LogConfig": {"Type": "none", "Config": {}},
            "MaskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware",
                            "/proc/acpi"],
            "ReadonlyPaths": ["/proc/sys", "/proc/sysrq-trigger", "/proc/bus", "/proc/fs"],
            "Devices": [], "PortBindings": {}, "Binds": None,
        },
    }


def check(info: dict[str, Any], profile: HardeningProfile = DEFAULT_PROFILE,
          job: Path = JOB) -> dict[str, Any]:
    return check_container(info, profile, job, image_id=IMAGE, image_env=IMAGE_ENV)


def test_compliant_container_passes() -> None:
    settings = check(compliant())
    assert settings["network_mode"] == "none"
    assert settings["mounts"] == [{"type": "bind", "source": "<job_dir>", "target": "/job",
                                   "rw": False}]


def test_digest_does_not_depend_on_the_job_path() -> None:
    other = Path("/srv/sealroom/jobs/run-2")
    a = settings_digest(check(compliant()))
    b = settings_digest(check(compliant(job=other), job=other))
    assert a == b and len(a) == 64


def test_digest_changes_with_the_profile() -> None:
    small = HardeningProfile(memory_bytes=256 * 1024 * 1024)
    assert settings_digest(check(compliant())) != settings_digest(
        check(compliant(small), small))


def host(key: str, value: Any) -> Any:
    def mutate(info: dict[str, Any]) -> None:
        info["HostConfig"][key] = value
    return mutate


def top(key: str, value: Any) -> Any:
    def mutate(info: dict[str, Any]) -> None:
        info[key] = value
    return mutate


def config(key: str, value: Any) -> Any:
    def mutate(info: dict[str, Any]) -> None:
        info["Config"][key] = value
    return mutate


CASES = {
    "network": host("NetworkMode", "bridge"),
    "rw root": host("ReadonlyRootfs", False),
    "privileged": host("Privileged", True),
    "cap add": host("CapAdd", ["SYS_ADMIN"]),
    "cap drop": host("CapDrop", []),
    "seccomp": host("SecurityOpt", ["no-new-privileges", "seccomp=unconfined"]),
    "seccomp custom": host("SecurityOpt", ["no-new-privileges", "seccomp={}"]),
    "label disable": host("SecurityOpt", ["no-new-privileges", "label=disable"]),
    "nnp": host("SecurityOpt", []),
    "masked paths": host("MaskedPaths", []),
    "readonly paths": host("ReadonlyPaths", []),
    "apparmor": top("AppArmorProfile", "unconfined"),
    "pids": host("PidsLimit", 0),
    "pids unlimited": host("PidsLimit", -1),
    "memory": host("Memory", 0),
    "swap": host("MemorySwap", 2 * DEFAULT_PROFILE.memory_bytes),
    "swap unlimited": host("MemorySwap", -1),
    "cpu": host("NanoCpus", 0),
    "ulimits": host("Ulimits", []),
    "oom disable": host("OomKillDisable", True),
    "tmpfs": host("Tmpfs", {"/tmp": "rw,exec,size=1g"}),
    "pid host": host("PidMode", "host"),
    "ipc host": host("IpcMode", "host"),
    "uts host": host("UTSMode", "host"),
    "userns host": host("UsernsMode", "host"),
    "cgroup parent": host("CgroupParent", "/evil"),
    "runtime": host("Runtime", "kata"),
    "devices": host("Devices", [{"PathOnHost": "/dev/mem"}]),
    "ports": host("PortBindings", {"80/tcp": [{"HostPort": "80"}]}),
    "group add": host("GroupAdd", ["docker"]),
    "sysctls": host("Sysctls", {"net.ipv4.ip_forward": "1"}),
    "logs": host("LogConfig", {"Type": "json-file"}),
    "root user": config("User", "0"),
    "no user": config("User", ""),
    "other user": config("User", "1000:1000"),
    "env": config("Env", [*IMAGE_ENV, "TOKEN=x"]),
    "tty": config("Tty", True),
    "image": top("Image", "sha256:" + "cd" * 32),
    "started": top("State", {"Running": True, "StartedAt": "2026-01-01T00:00:00Z"}),
    "writable job": top("Mounts", [{"Type": "bind", "Source": str(JOB),
                                    "Destination": "/job", "RW": True}]),
    "no job": top("Mounts", []),
    "socket": top("Mounts", [
        {"Type": "bind", "Source": str(JOB), "Destination": "/job", "RW": False},
        {"Type": "bind", "Source": "/run/docker.sock", "Destination": "/d.sock", "RW": False}]),
    "volume": top("Mounts", [
        {"Type": "bind", "Source": str(JOB), "Destination": "/job", "RW": False},
        {"Type": "volume", "Source": "/var/lib/docker/volumes/x", "Destination": "/data",
         "RW": True}]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_deviation_is_refused(name: str) -> None:
    info = copy.deepcopy(compliant())
    CASES[name](info)
    with pytest.raises(HardeningError) as exc:
        check(info)
    assert exc.value.code == "E_CONFIG"
    assert exc.value.deviations


def test_gvisor_profile_requires_runsc() -> None:
    gvisor = HardeningProfile(runtime="runsc")
    check(compliant(gvisor), gvisor)
    with pytest.raises(HardeningError):
        check(compliant(), gvisor)


def test_a_tsm_profile_binds_configfs_tsm_and_nothing_else() -> None:
    """SEV-SNP / TDX workers collect evidence through configfs-tsm: the profile binds exactly
    that directory, writable, and the check requires it; the default profile refuses it."""
    import dataclasses

    tsm = dataclasses.replace(DEFAULT_PROFILE, tsm_reports="/sys/kernel/config/tsm/report")
    mounts = tsm.create_kwargs(image_id=IMAGE, job_dir=JOB, command=["x"], labels={})["mounts"]
    assert [(m["Target"], m["ReadOnly"]) for m in mounts] == [
        ("/job", True), ("/sys/kernel/config/tsm/report", False)]
    info = compliant(tsm)
    info["Mounts"].append({"Type": "bind", "Source": "/sys/kernel/config/tsm/report",
                           "Destination": "/sys/kernel/config/tsm/report", "RW": True})
    assert len(check(info, tsm)["mounts"]) == 2
    with pytest.raises(HardeningError, match="mounts"):
        check(info)  # the default profile mounts only the job directory
    with pytest.raises(HardeningError, match="mounts"):
        check(compliant(tsm), tsm)  # the tsm profile requires its mount
    assert len(DEFAULT_PROFILE.create_kwargs(image_id=IMAGE, job_dir=JOB, command=["x"],
                                             labels={})["mounts"]) == 1
