"""Probe run inside the worker container (as ``python -I /job/probe.py MODE``).

Stdlib only. Every mode prints one JSON object (or raw bytes for ``bigout``) on stdout, the
launcher's only result channel. Nothing here asserts: the tests read the report.
"""

import ctypes
import errno
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import time


def _errname(exc):
    return errno.errorcode.get(getattr(exc, "errno", None) or 0, type(exc).__name__)


def attempt(fn):
    """'ok' when fn() succeeds, else the errno name (or exception type)."""
    try:
        fn()
    except Exception as exc:
        return _errname(exc) if isinstance(exc, OSError) else type(exc).__name__
    return "ok"


def network():
    def tcp(host, port):
        socket.create_connection((host, port), timeout=2).close()

    def udp_dns():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(2)
        query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01"
        s.sendto(query, ("8.8.8.8", 53))
        s.recvfrom(512)

    with open("/proc/net/dev") as fh:
        ifaces = sorted(line.split(":")[0].strip() for line in fh.readlines()[2:])
    report = {"proc_net_dev": ifaces, "sys_class_net": sorted(os.listdir("/sys/class/net"))}
    if ifaces != ["lo"]:
        # Never send a packet anywhere: with any interface but loopback the test fails anyway.
        return {**report, "skipped": "an interface other than lo exists"}
    # With only loopback these fail locally (no route); nothing leaves the container.
    return {
        **report,
        "tcp_1.1.1.1_443": attempt(lambda: tcp("1.1.1.1", 443)),
        "udp_dns_8.8.8.8": attempt(udp_dns),
        "tcp_metadata": attempt(lambda: tcp("169.254.169.254", 80)),
        "getaddrinfo": attempt(lambda: socket.getaddrinfo("example.com", 80)),
    }


def filesystem():
    def write(path):
        with open(path, "w") as fh:
            fh.write("x")

    site = next(p for p in sys.path if p.endswith("site-packages"))
    # Fill /tmp with 32 MiB files (each under the file-size ulimit) until the tmpfs is full.
    written, tmp_err, files = 0, "none", []
    block = b"\0" * (1 << 20)
    try:
        while written < (4 << 30):
            files.append(f"/tmp/fill.{len(files)}")
            with open(files[-1], "wb") as fh:
                for _ in range(32):
                    fh.write(block)
                    fh.flush()
                    written += len(block)
    except OSError as exc:
        tmp_err = _errname(exc)
    for name in files:
        os.unlink(name)
    shutil.copy("/bin/true", "/tmp/true")
    os.chmod("/tmp/true", 0o755)
    return {
        "write_root": attempt(lambda: write("/x")),
        "write_etc": attempt(lambda: write("/etc/x")),
        "write_site_packages": attempt(lambda: write(os.path.join(site, "x.py"))),
        "write_job": attempt(lambda: write("/job/x")),
        "write_job_secrets": attempt(lambda: write("/job/secrets/x")),
        "tmp_fill_bytes": written,
        "tmp_fill_error": tmp_err,
        "exec_from_tmp": attempt(lambda: subprocess.run(["/tmp/true"], check=True)),
        "docker_sock": [p for p in ("/var/run/docker.sock", "/run/docker.sock")
                        if os.path.exists(p)],
        "mounts": mounts(),
    }


def mounts():
    out = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            sep = fields.index("-")
            out.append({"target": fields[4], "options": fields[5].split(","),
                        "fstype": fields[sep + 1],
                        "super": fields[sep + 3].split(",")})
    return out


def privileges():
    status = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs",
                       "Seccomp"):
                status[key] = value.strip()
    libc = ctypes.CDLL(None, use_errno=True)

    def libc_call(fn, *args):
        if fn(*args) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    keyctl_nr = {"x86_64": 250, "aarch64": 219}.get(platform.machine())
    with open("/tmp/owned", "w"):
        pass
    return {
        "status": status,
        "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(),
        "groups": os.getgroups(),
        "chown_root": attempt(lambda: os.chown("/tmp/owned", 0, 0)),
        "raw_socket": attempt(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW)),
        "mount_tmpfs": attempt(lambda: libc_call(libc.mount, b"x", b"/tmp", b"tmpfs", 0, None)),
        "unshare_user": attempt(lambda: libc_call(libc.unshare, 0x10000000)),
        "keyctl": attempt(lambda: libc_call(libc.syscall, keyctl_nr, 0, -1, 0))
        if keyctl_nr else "skipped",
        "rlimits": {name: list(resource.getrlimit(getattr(resource, "RLIMIT_" + name.upper())))
                    for name in ("core", "nofile", "nproc", "fsize")},
        "dev": sorted(os.listdir("/dev")),
    }


def processes():
    procs = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    procs[pid] = fh.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                procs[pid] = "?"
    return {"pids": procs, "hostname": socket.gethostname(), "env": dict(os.environ)}


def secrets():
    out = {}
    base = "/job/secrets"
    for name in sorted(os.listdir(base)):
        st = os.stat(os.path.join(base, name))
        with open(os.path.join(base, name), "rb") as fh:
            data = fh.read()
        out[name] = {"uid": st.st_uid, "mode": oct(st.st_mode & 0o777), "size": len(data)}
    return out


def isolation():
    return {"network": network(), "filesystem": filesystem(), "privileges": privileges(),
            "processes": processes(), "secrets": secrets()}


def forkbomb():
    children, err = 0, "none"
    try:
        while children < 100000:
            pid = os.fork()
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            children += 1
    except OSError as exc:
        err = _errname(exc)
    return {"children": children, "error": err}


def oom():
    hog = []
    while True:
        hog.append(b"\1" * (32 << 20))


def sleep():
    time.sleep(600)


def bigout(n):
    chunk = bytes(range(256)) * 4096  # 1 MiB
    out = sys.stdout.buffer
    for i in range(n):
        out.write(chunk)
    out.flush()


def main():
    mode = sys.argv[1]
    if mode == "bigout":
        bigout(int(sys.argv[2]))
        return
    result = {"isolation": isolation, "forkbomb": forkbomb, "oom": oom, "sleep": sleep}[mode]()
    sys.stdout.write(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
