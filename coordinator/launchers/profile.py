"""The worker container's hardening profile, and the check of a created container against it.

``HardeningProfile.create_kwargs`` is the only place that says how a worker container is
created. ``check_container`` reads what the engine actually configured (``docker inspect`` of
the created, not yet started, container) and refuses any deviation, so a bug in the kwargs, a
daemon default, or a tampered engine cannot hand keys to a weaker container. It returns the
normalised settings whose digest goes into the run's log entry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordinator.launchers.base import JOB_MOUNT, WORKER_GID, WORKER_UID
from coordinator.launchers.errors import HardeningError

LABEL_OWNER = "sealroom.owner"
LABEL_RUN_ID = "sealroom.run_id"
LABEL_INSTANCE = "sealroom.instance"
OWNER = "sealroom"

_TMPFS_FLAGS = ("rw", "noexec", "nosuid", "nodev")
_NO_NEW_PRIVS = {"no-new-privileges", "no-new-privileges:true", "no-new-privileges=true"}
# Docker's default masked and read-only /proc and /sys paths (emptied by --privileged or
# --security-opt systempaths=unconfined).
_MASKED_PATHS = frozenset({"/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"})
_READONLY_PATHS = frozenset({"/proc/sys", "/proc/sysrq-trigger", "/proc/bus", "/proc/fs"})
_DOCKER_SOCKETS = ("docker.sock", "containerd.sock", "podman.sock")
_MIB = 1024 * 1024
TSM_MOUNT = "/sys/kernel/config/tsm/report"  # enclave.evidence.TSM_REPORTS


@dataclass(frozen=True)
class HardeningProfile:
    """Limits and identity of a worker container. Every field is enforced by the check."""

    user_uid: int = WORKER_UID
    user_gid: int = WORKER_GID
    memory_bytes: int = 1024 * _MIB
    nano_cpus: int = 1_000_000_000
    pids_limit: int = 128
    tmpfs_bytes: int = 256 * _MIB
    shm_bytes: int = 64 * _MIB
    nofile: int = 1024
    nproc: int = 1024
    fsize_bytes: int = 256 * _MIB
    oom_score_adj: int = 500
    runtime: str = "runc"
    hostname: str = "worker"
    # the host's configfs-tsm report directory, bound writable at the same path so a worker in
    # an SEV-SNP or TDX confidential VM can collect its evidence (enclave/evidence.py); None
    # (the default) mounts nothing
    tsm_reports: str | None = None

    @property
    def user(self) -> str:
        """The ``uid:gid`` string given to the engine."""
        return f"{self.user_uid}:{self.user_gid}"

    @property
    def tmpfs_options(self) -> str:
        """Mount options of ``/tmp``: size-capped, no exec, no setuid, no devices."""
        return ",".join((*_TMPFS_FLAGS, f"size={self.tmpfs_bytes}"))

    def ulimits(self) -> dict[str, int]:
        """Soft = hard limit per ulimit name."""
        return {"nofile": self.nofile, "nproc": self.nproc, "core": 0,
                "fsize": self.fsize_bytes}

    def create_kwargs(self, *, image_id: str, job_dir: Path, command: Sequence[str],
                      labels: Mapping[str, str]) -> dict[str, Any]:
        """Keyword arguments for ``docker.DockerClient.containers.create``.

        The job directory is the only bind mount (read-only at ``/job``); no environment is
        passed; logs are not kept by the engine (stdout is attached, stderr is dropped).
        """
        from docker.types import LogConfig, Mount, Ulimit

        return {
            "image": image_id,
            "command": list(command),
            "user": self.user,
            "hostname": self.hostname,
            "working_dir": "/",
            "network_mode": "none",
            "read_only": True,
            "tmpfs": {"/tmp": self.tmpfs_options},
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "privileged": False,
            "pids_limit": self.pids_limit,
            "mem_limit": self.memory_bytes,
            "memswap_limit": self.memory_bytes,
            "nano_cpus": self.nano_cpus,
            "shm_size": self.shm_bytes,
            "ipc_mode": "private",
            "oom_score_adj": self.oom_score_adj,
            "runtime": self.runtime,
            "ulimits": [Ulimit(name=n, soft=v, hard=v) for n, v in self.ulimits().items()],
            "mounts": [Mount(target=JOB_MOUNT, source=str(job_dir), type="bind",
                             read_only=True)]
            + ([Mount(target=TSM_MOUNT, source=self.tsm_reports, type="bind", read_only=False)]
               if self.tsm_reports else []),
            "labels": dict(labels),
            "log_config": LogConfig(type="none"),
            "stdin_open": False,
            "tty": False,
        }


DEFAULT_PROFILE = HardeningProfile()


def _ulimits(host: Mapping[str, Any]) -> dict[str, list[int]]:
    return {str(u.get("Name")): [int(u.get("Soft", -1)), int(u.get("Hard", -1))]
            for u in host.get("Ulimits") or []}


def _tmpfs(host: Mapping[str, Any]) -> dict[str, list[str]]:
    return {str(k): sorted(str(v).split(",")) for k, v in (host.get("Tmpfs") or {}).items()}


def _mounts(info: Mapping[str, Any], job_dir: Path) -> list[dict[str, Any]]:
    out = []
    for m in info.get("Mounts") or []:
        source = str(m.get("Source", ""))
        out.append({
            "type": str(m.get("Type", "")),
            "source": "<job_dir>" if source == str(job_dir) else source,
            "target": str(m.get("Destination", "")),
            "rw": bool(m.get("RW", True)),
        })
    return sorted(out, key=lambda m: m["target"])


def normalise(info: Mapping[str, Any], job_dir: Path) -> dict[str, Any]:
    """The isolation-relevant settings of an inspected container, in a stable shape.

    The job directory's host path is replaced by ``<job_dir>`` so the same profile gives the
    same digest on every run.
    """
    host: Mapping[str, Any] = info.get("HostConfig") or {}
    config: Mapping[str, Any] = info.get("Config") or {}
    networks = (info.get("NetworkSettings") or {}).get("Networks") or {}
    return {
        "apparmor_profile": str(info.get("AppArmorProfile") or ""),
        "cap_add": sorted(host.get("CapAdd") or []),
        "cap_drop": sorted(str(c).upper() for c in host.get("CapDrop") or []),
        "cgroup_parent": str(host.get("CgroupParent") or ""),
        "devices": len(host.get("Devices") or []) + len(host.get("DeviceRequests") or [])
        + len(host.get("DeviceCgroupRules") or []),
        "env": sorted(str(e).split("=", 1)[0] for e in config.get("Env") or []),
        "group_add": sorted(str(g) for g in host.get("GroupAdd") or []),
        "ipc_mode": str(host.get("IpcMode") or ""),
        "log_driver": str((host.get("LogConfig") or {}).get("Type") or ""),
        "masked_paths": sorted(host.get("MaskedPaths") or []),
        "memory": int(host.get("Memory") or 0),
        "memory_swap": int(host.get("MemorySwap") or 0),
        "mounts": _mounts(info, job_dir),
        "nano_cpus": int(host.get("NanoCpus") or 0),
        "network_mode": str(host.get("NetworkMode") or ""),
        "networks": sorted(networks),
        "oom_kill_disable": bool(host.get("OomKillDisable")),
        "oom_score_adj": int(host.get("OomScoreAdj") or 0),
        "pid_mode": str(host.get("PidMode") or ""),
        "pids_limit": int(host.get("PidsLimit") or 0),
        "port_bindings": len(host.get("PortBindings") or {}),
        "privileged": bool(host.get("Privileged")),
        "publish_all_ports": bool(host.get("PublishAllPorts")),
        "readonly_paths": sorted(host.get("ReadonlyPaths") or []),
        "readonly_rootfs": bool(host.get("ReadonlyRootfs")),
        "runtime": str(host.get("Runtime") or ""),
        "security_opt": sorted(str(s) for s in host.get("SecurityOpt") or []),
        "shm_size": int(host.get("ShmSize") or 0),
        "sysctls": sorted(host.get("Sysctls") or {}),
        "tmpfs": _tmpfs(host),
        "tty": bool(config.get("Tty")),
        "ulimits": _ulimits(host),
        "user": str(config.get("User") or ""),
        "userns_mode": str(host.get("UsernsMode") or ""),
        "uts_mode": str(host.get("UTSMode") or ""),
        "volumes_from": len(host.get("VolumesFrom") or []),
    }


def _user_deviation(user: str, profile: HardeningProfile) -> str | None:
    uid = user.split(":", 1)[0]
    if uid in ("", "0", "root"):
        return f"user runs as root ({user!r})"
    if user != profile.user:
        return f"user {user!r} (want {profile.user!r})"
    return None


def _mount_deviations(s: Mapping[str, Any], profile: HardeningProfile) -> list[str]:
    out = []
    for m in s["mounts"]:
        if any(sock in m["source"] or sock in m["target"] for sock in _DOCKER_SOCKETS):
            out.append(f"engine socket mounted at {m['target']}")
    want = [{"type": "bind", "source": "<job_dir>", "target": JOB_MOUNT, "rw": False}]
    if profile.tsm_reports:
        want.append({"type": "bind", "source": profile.tsm_reports, "target": TSM_MOUNT,
                     "rw": True})
        want.sort(key=lambda m: str(m["target"]))
    if s["mounts"] != want:
        extra = [m["target"] + (" (writable)" if m["rw"] else "") for m in s["mounts"]
                 if m not in want]
        out.append("mounts: only the job directory, read-only at /job, is allowed; found "
                   + (", ".join(extra) or "no job mount"))
    return out


def _tmpfs_deviations(s: Mapping[str, Any], profile: HardeningProfile) -> list[str]:
    want = {"/tmp": sorted(profile.tmpfs_options.split(","))}
    if s["tmpfs"] == want:
        return []
    return [f"tmpfs {s['tmpfs']} (want /tmp with {profile.tmpfs_options})"]


def _security_deviations(s: Mapping[str, Any]) -> list[str]:
    out = []
    opts = set(s["security_opt"])
    if not opts & _NO_NEW_PRIVS:
        out.append("no-new-privileges is not set")
    for opt in sorted(opts - _NO_NEW_PRIVS):
        name = opt.replace(":", "=").split("=", 1)[0]
        if name == "seccomp":
            out.append(f"seccomp profile overridden ({opt.split('=', 1)[-1][:40]}); "
                       "only the engine's default profile is accepted")
        else:
            out.append(f"security option {opt[:60]!r} is not allowed")
    if s["apparmor_profile"] == "unconfined":
        out.append("AppArmor unconfined")
    if not _MASKED_PATHS <= set(s["masked_paths"]):
        out.append("default masked /proc paths are not masked")
    if not _READONLY_PATHS <= set(s["readonly_paths"]):
        out.append("default read-only /proc paths are writable")
    return out


def _limit_deviations(s: Mapping[str, Any], profile: HardeningProfile) -> list[str]:
    out = []
    if not 0 < s["pids_limit"] <= profile.pids_limit:
        out.append(f"pids limit {s['pids_limit']} (want 1..{profile.pids_limit})")
    if not 0 < s["memory"] <= profile.memory_bytes:
        out.append(f"memory limit {s['memory']} (want 1..{profile.memory_bytes})")
    if s["memory_swap"] != s["memory"]:
        out.append(f"memory+swap {s['memory_swap']} != memory {s['memory']} (swap allowed)")
    if not 0 < s["nano_cpus"] <= profile.nano_cpus:
        out.append(f"cpu limit {s['nano_cpus']} (want 1..{profile.nano_cpus})")
    if not 0 < s["shm_size"] <= profile.shm_bytes:
        out.append(f"shm size {s['shm_size']} (want 1..{profile.shm_bytes})")
    want_ulimits = {n: [v, v] for n, v in profile.ulimits().items()}
    if s["ulimits"] != want_ulimits:
        out.append(f"ulimits {s['ulimits']} (want {want_ulimits})")
    if s["oom_kill_disable"]:
        out.append("OOM killer disabled")
    if s["oom_score_adj"] < profile.oom_score_adj:
        out.append(f"oom score adj {s['oom_score_adj']} (want >= {profile.oom_score_adj})")
    return out


def _namespace_deviations(s: Mapping[str, Any], profile: HardeningProfile) -> list[str]:
    out = []
    if s["network_mode"] != "none" or s["networks"] not in ([], ["none"]):
        out.append(f"network {s['network_mode']!r} (want 'none')")
    for key in ("pid_mode", "uts_mode", "userns_mode", "cgroup_parent"):
        if s[key]:
            out.append(f"{key} {s[key]!r} (want the engine's private default)")
    if s["ipc_mode"] not in ("private", "none"):
        out.append(f"ipc mode {s['ipc_mode']!r} (want private)")
    if s["runtime"] != profile.runtime:
        out.append(f"runtime {s['runtime']!r} (want {profile.runtime!r})")
    return out


def deviations(settings: Mapping[str, Any], profile: HardeningProfile,
               image_env: Sequence[str] = ()) -> list[str]:
    """Every way ``settings`` (from :func:`normalise`) is weaker than ``profile``; [] if none.

    ``image_env`` is the image's own ``Config.Env``: the container may have exactly those
    variables, none added by the launcher or anyone else.
    """
    s = settings
    out: list[str] = []
    if s["privileged"]:
        out.append("privileged")
    if not s["readonly_rootfs"]:
        out.append("root filesystem is writable")
    if s["cap_add"]:
        out.append(f"capabilities added: {', '.join(s['cap_add'])}")
    if s["cap_drop"] != ["ALL"]:
        out.append(f"capabilities not all dropped ({s['cap_drop']})")
    if (user_dev := _user_deviation(s["user"], profile)) is not None:
        out.append(user_dev)
    out += _security_deviations(s)
    out += _namespace_deviations(s, profile)
    out += _limit_deviations(s, profile)
    out += _tmpfs_deviations(s, profile)
    out += _mount_deviations(s, profile)
    if s["devices"]:
        out.append("host devices attached")
    if s["group_add"]:
        out.append(f"supplementary groups added: {', '.join(s['group_add'])}")
    if s["port_bindings"] or s["publish_all_ports"]:
        out.append("ports published")
    if s["volumes_from"]:
        out.append("volumes shared from another container")
    if s["sysctls"]:
        out.append(f"sysctls set: {', '.join(s['sysctls'])}")
    if s["tty"]:
        out.append("a TTY is allocated")
    if s["log_driver"] != "none":
        out.append(f"log driver {s['log_driver']!r} keeps worker output (want 'none')")
    added_env = set(s["env"]) - {str(e).split("=", 1)[0] for e in image_env}
    if added_env:
        out.append(f"environment variables added: {', '.join(sorted(added_env))}")
    return out


def check_container(info: Mapping[str, Any], profile: HardeningProfile, job_dir: Path, *,
                    image_id: str, image_env: Sequence[str] = ()) -> dict[str, Any]:
    """Check an inspected, created container; return its normalised settings when compliant.

    Raises HardeningError (``E_CONFIG``) listing every deviation, including a container that
    is not running the expected image or is already running.
    """
    settings = normalise(info, job_dir)
    problems = deviations(settings, profile, image_env)
    if str(info.get("Image") or "") != image_id:
        problems.append("container does not run the measured worker image")
    state = info.get("State") or {}
    if state.get("Running") or state.get("StartedAt", "0001-01-01T00:00:00Z")[:4] != "0001":
        problems.append("container was started before the check")
    if problems:
        raise HardeningError(problems)
    return settings
