"""T31–T37: probes run inside the worker image through the real DockerLauncher.

One container runs the full isolation probe (network, filesystem, privileges, processes,
secrets); fork bomb, memory, deadline and output size each get their own container.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coordinator.launchers import DockerLauncher, OutputLimitError
from coordinator.launchers.profile import DEFAULT_PROFILE, HardeningProfile

pytestmark = pytest.mark.docker

SECRET = b"sealed-worker-key-for-tests"
HOST_ONLY_ENV = {"SEALROOM_DATABASE_URL": "postgresql://coordinator:hunter2@db/sealroom",
                 "SEALROOM_ADMIN_TOKEN": "tok-3f9a1c"}


@pytest.fixture(scope="module")
def report(docker_client: Any, worker_image: str, probe_entrypoint: list[str],
           new_job_dir: Callable[[Path], Path], tmp_path_factory: pytest.TempPathFactory
           ) -> dict[str, Any]:
    """The isolation probe's report from one hardened container (default profile)."""
    job = new_job_dir(tmp_path_factory.mktemp("isolation") / "job")
    launcher = DockerLauncher(worker_image, client=docker_client, instance="pytest",
                              _entrypoint=probe_entrypoint)
    saved = {k: os.environ.get(k) for k in HOST_ONLY_ENV}
    os.environ.update(HOST_ONLY_ENV)
    try:
        result = launcher.launch(job, ["isolation"], {"worker.key": SECRET}, deadline_s=120)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert result.exit_code == 0 and not result.timed_out and not result.oom_killed
    assert result.isolation == "container"
    assert len(result.settings_digest) == 64
    assert not any((job / "secrets").iterdir()), "secrets must be removed after the run"
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_t31_no_network(report: dict[str, Any]) -> None:
    net = report["network"]
    assert net["proc_net_dev"] == ["lo"]
    assert net["sys_class_net"] == ["lo"]
    assert net["tcp_1.1.1.1_443"] in ("ENETUNREACH", "EHOSTUNREACH")
    assert net["udp_dns_8.8.8.8"] in ("ENETUNREACH", "EHOSTUNREACH")
    assert net["tcp_metadata"] in ("ENETUNREACH", "EHOSTUNREACH")
    assert net["getaddrinfo"] == "gaierror"


def test_t32_root_filesystem_read_only(report: dict[str, Any]) -> None:
    fs = report["filesystem"]
    for key in ("write_root", "write_etc", "write_site_packages", "write_job",
                "write_job_secrets"):
        assert fs[key] == "EROFS", key
    assert fs["docker_sock"] == []


def test_t32_tmp_capped_and_noexec(report: dict[str, Any]) -> None:
    fs = report["filesystem"]
    assert fs["tmp_fill_error"] in ("ENOSPC", "EFBIG")
    assert fs["tmp_fill_bytes"] <= DEFAULT_PROFILE.tmpfs_bytes
    assert fs["exec_from_tmp"] == "EACCES"
    tmp = next(m for m in fs["mounts"] if m["target"] == "/tmp")
    assert {"noexec", "nosuid", "nodev"} <= set(tmp["options"])


def test_t32_only_expected_mounts_are_writable(report: dict[str, Any]) -> None:
    # Kernel and engine pseudo-filesystems are writable mounts but hold nothing of the host.
    allowed = {"/tmp", "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue",
               "/sys/fs/cgroup", "/proc/keys", "/proc/timer_list", "/proc/timer_stats",
               "/proc/latency_stats", "/proc/sched_debug", "/proc/kcore"}
    mounts = report["filesystem"]["mounts"]
    writable = {m["target"] for m in mounts if "rw" in m["options"]}
    assert writable <= allowed, writable - allowed
    by_target = {m["target"]: m for m in mounts}
    assert "ro" in by_target["/"]["options"]
    assert "ro" in by_target["/job"]["options"]
    host_fs = {m["target"] for m in mounts if m["fstype"] not in
               ("overlay", "proc", "tmpfs", "devpts", "sysfs", "cgroup", "cgroup2", "mqueue")}
    assert host_fs <= {"/job", "/etc/resolv.conf", "/etc/hostname", "/etc/hosts"}


def test_t33_capabilities_and_privilege(report: dict[str, Any]) -> None:
    priv = report["privileges"]
    status = priv["status"]
    for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[key], 16) == 0, key
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"
    assert priv["uid"] != 0 and priv["euid"] != 0 and priv["gid"] != 0
    assert 0 not in priv["groups"]
    for key in ("chown_root", "raw_socket", "mount_tmpfs", "unshare_user"):
        assert priv[key] == "EPERM", key
    assert priv["keyctl"] in ("EPERM", "ENOSYS", "skipped")
    assert priv["rlimits"]["core"] == [0, 0]
    assert "kmsg" not in priv["dev"] and "mem" not in priv["dev"]


def test_t36_no_host_secrets_in_environment(report: dict[str, Any]) -> None:
    env = report["processes"]["env"]
    assert set(env) <= {"PATH", "HOSTNAME", "LANG", "HOME", "PYTHONDONTWRITEBYTECODE",
                        "PYTHONUNBUFFERED"}
    for value in HOST_ONLY_ENV.values():
        assert value not in json.dumps(report)


def test_t36_secrets_handed_over_to_worker_only(report: dict[str, Any]) -> None:
    secrets = report["secrets"]
    assert secrets["worker.key"] == {"uid": 65534, "mode": "0o400", "size": len(SECRET)}
    # besides the secrets, only the digest of the checked settings (64 hex characters)
    assert secrets["isolation.digest"] == {"uid": 65534, "mode": "0o400", "size": 64}
    assert set(secrets) == {"worker.key", "isolation.digest"}


def test_t37_only_worker_processes_visible(report: dict[str, Any]) -> None:
    procs = report["processes"]["pids"]
    assert "1" in procs
    assert all("probe.py" in cmd for cmd in procs.values()), procs
    assert report["processes"]["hostname"] == DEFAULT_PROFILE.hostname


def test_t34_fork_bomb_stops_at_pids_limit(probe_launcher: Any, job_dir: Path) -> None:
    profile = HardeningProfile(pids_limit=32)
    result = probe_launcher(profile).launch(job_dir, ["forkbomb"], deadline_s=60)
    assert result.exit_code == 0 and not result.timed_out
    bomb = json.loads(result.stdout)
    assert bomb["error"] == "EAGAIN"
    assert bomb["children"] < profile.pids_limit


def test_t34_deadline_kills_container(probe_launcher: Any, job_dir: Path) -> None:
    result = probe_launcher().launch(job_dir, ["sleep"], deadline_s=2)
    assert result.timed_out
    assert result.exit_code != 0
    error = result.resource_error()
    assert error is not None and error.code == "E_RESOURCE"


def test_t35_memory_over_limit_is_oom_killed(probe_launcher: Any, job_dir: Path) -> None:
    profile = HardeningProfile(memory_bytes=256 * 1024 * 1024)
    result = probe_launcher(profile).launch(job_dir, ["oom"], deadline_s=60)
    assert result.oom_killed
    assert not result.timed_out
    assert result.exit_code == 137
    error = result.resource_error()
    assert error is not None and error.code == "E_RESOURCE"


def test_large_stdout_is_returned_whole(probe_launcher: Any, job_dir: Path) -> None:
    mib = 48
    result = probe_launcher().launch(job_dir, ["bigout", str(mib)], deadline_s=60)
    assert result.exit_code == 0
    expected = (bytes(range(256)) * 4096) * mib
    assert len(result.stdout) == len(expected)
    assert hashlib.sha256(result.stdout).digest() == hashlib.sha256(expected).digest()


def test_stdout_over_cap_is_refused(probe_launcher: Any, job_dir: Path) -> None:
    launcher = probe_launcher(max_output_bytes=1024 * 1024)
    with pytest.raises(OutputLimitError) as info:
        launcher.launch(job_dir, ["bigout", "8"], deadline_s=60)
    assert info.value.code == "E_RESOURCE"


def test_settings_digest_is_stable_across_runs(probe_launcher: Any, tmp_path: Path,
                                               new_job_dir: Callable[[Path], Path]) -> None:
    digests = set()
    for name in ("a", "b"):
        job = new_job_dir(tmp_path / name)
        digests.add(probe_launcher().launch(job, ["bigout", "0"], deadline_s=60).settings_digest)
    assert len(digests) == 1
