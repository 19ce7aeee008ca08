"""Build the worker image hermetically: wheels on the host, no network inside the build.

What this module promises:

* The dependency set is read from ``pyproject.toml``: the base dependencies (minus the
  HTTP client, which the worker never uses) plus the ``enclave`` extra.
* Wheels for the image's Python (3.11, CPython) and the host's architecture are downloaded with
  ``pip download --only-binary=:all:`` into ``images/worker/wheels/`` (git-ignored) and pinned,
  with their SHA-256, in ``images/worker/requirements-<arch>.lock``. A lock that matches the
  dependency set is reused: its wheels are verified locally and only missing ones are fetched
  (with ``--require-hashes``), so a rebuild with a warm cache needs no network at all.
* The build context (``images/.build/worker``, git-ignored) holds the Dockerfile, the lock, the
  wheels and the ``sdk`` and ``enclave`` source trees only; coordinator code never enters it.
* The context is assembled deterministically (:func:`assemble_context`: sorted; tracked and
  untracked-but-not-ignored sources only; normalised modes and times) and the worker's
  Dockerfile builds the same bytes from it every time (no bytecode timestamps, no pip or
  caches left, a fixed ``SOURCE_DATE_EPOCH``): the worker's measurement is the tree digest of the image
  (:mod:`coordinator.imagemeasure`, :mod:`sdk.protocol.treedigest`), which a rebuild of the same
  sources on the same base reproduces. The Docker image id is only the engine's handle.
* ``docker build`` runs with ``network_mode="none"``.

The operators' coordinator image is built the same way (``--target coordinator``): base
dependencies plus the ``coordinator`` extra, and the ``sdk`` and ``coordinator`` packages.

Command line: ``python -m coordinator.images build [--target worker|coordinator] [--base IMAGE]
[--tag TAG] [--no-cache]``; on stdout it prints the worker's measurement (the coordinator
image's id for ``--target coordinator``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdk.errors import SealroomError

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGES_DIR = REPO_ROOT / "images"
BUILD_DIR = IMAGES_DIR / ".build"  # git-ignored
OFFLINE_BASE = "sealroom-base:bookworm"
PYTHON_VERSION = "3.11"
# The one build time of every image (1980-01-01, the earliest a zip file can say): file times in
# the build context and SOURCE_DATE_EPOCH in the build. Fixed rather than the commit's time, so
# that a source archive without git history rebuilds the same measurement too.
SOURCE_DATE_EPOCH = 315532800


@dataclass(frozen=True)
class ImageTarget:
    """What one image needs: extras of pyproject, packages copied as source, where things live."""

    name: str
    extras: tuple[str, ...]
    excluded: frozenset[str]
    source_packages: tuple[str, ...]
    default_tag: str
    wheel_dir: Path

    @property
    def image_dir(self) -> Path:
        """``images/<name>``: the Dockerfile and the committed lock files."""
        return IMAGES_DIR / self.name

    def lock_path(self, arch: str) -> Path:
        """The per-architecture lock file, committed next to the Dockerfile."""
        return self.image_dir / f"requirements-{arch}.lock"


WORKER = ImageTarget(
    # never used inside (cbor2 is: the Nitro evidence request)
    name="worker", extras=("enclave",), excluded=frozenset({"httpx", "dcap-qvl"}),
    source_packages=("sdk", "enclave"),  # never "coordinator"
    default_tag="sealroom-worker:latest", wheel_dir=IMAGES_DIR / "worker" / "wheels")
COORDINATOR = ImageTarget(
    name="coordinator", extras=("coordinator",), excluded=frozenset(),
    source_packages=("sdk", "coordinator"),  # never "enclave"
    default_tag="sealroom-coordinator:latest", wheel_dir=BUILD_DIR / "coordinator-wheels")
TARGETS = {t.name: t for t in (WORKER, COORDINATOR)}
WORKER_DIR = WORKER.image_dir
DEFAULT_TAG = WORKER.default_tag

_PLATFORMS = {
    "x86_64": ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64"),
    "aarch64": ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64"),
}
_ARCH_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}


class ImageBuildError(RuntimeError):
    """The worker image could not be built; the message says which step failed."""


@dataclass(frozen=True)
class LockEntry:
    """One pinned wheel: distribution name, version, file name and SHA-256."""

    name: str
    version: str
    filename: str
    sha256: str

    def line(self) -> str:
        """The requirements line pip needs for ``--require-hashes``."""
        return f"{self.name}=={self.version} --hash=sha256:{self.sha256}  # {self.filename}"


def machine_arch(machine: str | None = None) -> str:
    """Normalise ``uname -m`` to ``x86_64`` or ``aarch64``.

    Raises ImageBuildError for an architecture without manylinux platform tags here.
    """
    arch = (machine or platform.machine()).lower()
    arch = _ARCH_ALIASES.get(arch, arch)
    if arch not in _PLATFORMS:
        raise ImageBuildError(f"unsupported machine architecture {arch!r}")
    return arch


def requirements_for(target: ImageTarget = WORKER,
                     pyproject: Path = REPO_ROOT / "pyproject.toml") -> list[str]:
    """The requirement strings ``target`` needs: base dependencies (minus its exclusions) plus
    its extras, read from pyproject.toml.

    Raises ImageBuildError when pyproject.toml lacks one of the extras.
    """
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    extras: dict[str, list[str]] = project.get("optional-dependencies", {})
    reqs = [r for r in project.get("dependencies", []) if _req_name(r) not in target.excluded]
    for extra in target.extras:
        if extra not in extras:
            raise ImageBuildError(f"pyproject.toml has no [project.optional-dependencies] {extra}")
        reqs += [r for r in extras[extra] if not _req_name(r).startswith("sealroom")]
    return sorted(set(reqs), key=str.lower)


def worker_requirements(pyproject: Path = REPO_ROOT / "pyproject.toml") -> list[str]:
    """The worker's requirement strings (see :func:`requirements_for`)."""
    return requirements_for(WORKER, pyproject)


def _req_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    return _normalise(match.group(0)) if match else requirement


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def lock_stamp(requirements: Sequence[str], arch: str) -> str:
    """A digest of what a lock was resolved for (requirements, Python, platforms)."""
    spec = {"requirements": list(requirements), "python": PYTHON_VERSION,
            "platforms": list(_PLATFORMS[arch])}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def read_lock(lock_path: Path) -> tuple[str, list[LockEntry]]:
    """Parse a lock file written by :func:`write_lock`: (stamp, entries). Missing file → ("", [])."""
    if not lock_path.exists():
        return "", []
    stamp, entries = "", []
    pattern = re.compile(r"^(\S+)==(\S+) --hash=sha256:([0-9a-f]{64})\s+#\s+(\S+)$")
    for raw in lock_path.read_text(encoding="utf-8").splitlines():
        if raw.startswith("# stamp: "):
            stamp = raw.removeprefix("# stamp: ").strip()
        elif match := pattern.match(raw.strip()):
            name, version, sha, filename = match.groups()
            entries.append(LockEntry(name, version, filename, sha))
    return stamp, entries


def write_lock(lock_path: Path, stamp: str, entries: Iterable[LockEntry]) -> None:
    """Write the pinned, hashed requirements file (sorted, so it diffs well)."""
    lines = [
        "# Generated by `python -m coordinator.images lock`; do not edit.",
        "# Wheels of the worker image's dependencies, pinned with their SHA-256.",
        f"# stamp: {stamp}",
    ]
    lines += [e.line() for e in sorted(entries, key=lambda e: e.name)]
    lock_path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def entries_from_wheels(wheel_dir: Path) -> list[LockEntry]:
    """One lock entry per ``*.whl`` in ``wheel_dir``.

    Raises ImageBuildError if two wheels have the same distribution name.
    """
    entries: dict[str, LockEntry] = {}
    for wheel in sorted(wheel_dir.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        key = _normalise(name)
        if key in entries:
            raise ImageBuildError(f"two wheels for {key}: {entries[key].filename}, {wheel.name}")
        entries[key] = LockEntry(key, version, wheel.name, _sha256(wheel))
    return list(entries.values())


def _pip_download(args: Sequence[str], dest: Path, arch: str) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
           "--only-binary=:all:", "--implementation", "cp", "--python-version", PYTHON_VERSION,
           "--dest", str(dest)]
    for tag in _PLATFORMS[arch]:
        cmd += ["--platform", tag]
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ImageBuildError(f"pip download failed:\n{proc.stdout[-2000:]}{proc.stderr[-4000:]}")


def prepare_wheels(target: ImageTarget = WORKER, *, arch: str | None = None,
                   requirements: Sequence[str] | None = None, relock: bool = False,
                   log: Callable[[str], None] = print) -> Path:
    """Make ``target.wheel_dir`` hold exactly the locked wheels; return the lock file's path.

    Reuses the lock when its stamp matches the requirements (fetching only wheels that are
    missing or whose hash differs, verified by pip); otherwise resolves afresh and rewrites it.
    Raises ImageBuildError when pip fails.
    """
    arch = machine_arch(arch)
    reqs = list(requirements) if requirements is not None else requirements_for(target)
    lock_path = target.lock_path(arch)
    wheel_dir = target.wheel_dir
    stamp = lock_stamp(reqs, arch)
    old_stamp, entries = read_lock(lock_path)
    wheel_dir.mkdir(parents=True, exist_ok=True)
    if relock or old_stamp != stamp or not entries:
        log(f"resolving {len(reqs)} requirements for cp{PYTHON_VERSION} {arch}")
        fresh = wheel_dir.with_name(wheel_dir.name + ".new")
        shutil.rmtree(fresh, ignore_errors=True)
        fresh.mkdir()
        _pip_download(reqs, fresh, arch)
        shutil.rmtree(wheel_dir)
        fresh.rename(wheel_dir)
        write_lock(lock_path, stamp, entries_from_wheels(wheel_dir))
        return lock_path
    missing = [e for e in entries if not (wheel_dir / e.filename).exists()
               or _sha256(wheel_dir / e.filename) != e.sha256]
    if missing:
        log(f"fetching {len(missing)} locked wheels")
        for e in missing:
            (wheel_dir / e.filename).unlink(missing_ok=True)
        pinned = wheel_dir / ".missing.txt"
        pinned.write_text("".join(e.line() + "\n" for e in missing), encoding="utf-8")
        try:
            _pip_download(["--no-deps", "--require-hashes", "-r", str(pinned)], wheel_dir, arch)
        finally:
            pinned.unlink(missing_ok=True)
    else:
        log(f"all {len(entries)} locked wheels cached in {wheel_dir}")
    wanted = {e.filename for e in entries}
    for stray in wheel_dir.glob("*.whl"):
        if stray.name not in wanted:
            stray.unlink()
    return lock_path


def source_files(package: str, root: Path = REPO_ROOT) -> list[str]:
    """The files of ``package`` that go into an image, as sorted paths relative to ``root``.

    In a git checkout: the tracked and the untracked-but-not-ignored files that exist (what a
    commit of the working tree would hold; no ``__pycache__``, no editor or tool droppings).
    Elsewhere (a source archive): every file but bytecode and hidden names.
    """
    try:
        proc = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                               "--exclude-standard", "--", package],
                              capture_output=True, check=False)
    except OSError:
        proc = None
    if proc is not None and proc.returncode == 0:
        names = {n for n in proc.stdout.decode("utf-8", "surrogateescape").split("\0") if n}
        return sorted(n for n in names if (root / n).is_file() and not _is_bytecode(n))
    found = []
    for path in (root / package).rglob("*"):
        rel = path.relative_to(root)
        if path.is_file() and not _is_bytecode(str(rel)) \
                and not any(part.startswith(".") for part in rel.parts):
            found.append(rel.as_posix())
    return sorted(found)


def _is_bytecode(name: str) -> bool:
    return "__pycache__" in name.split("/") or name.endswith((".pyc", ".pyo"))


def source_tree_state(packages: Sequence[str], root: Path = REPO_ROOT) -> str:
    """The commit the sources are at (12 hex digits; ``""`` outside a git checkout), with
    ``-dirty`` appended when ``packages`` or ``images/`` have uncommitted changes."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, check=False)
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--",
                                 *packages, "images"], capture_output=True, text=True,
                                check=False)
    except OSError:
        return ""
    if head.returncode != 0:
        return ""
    return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def source_code_digest(root: Path = REPO_ROOT) -> str | None:
    """The worker's code digest (``enclave.measure``) of the sources in ``root``, computed by a
    child Python (the coordinator never imports enclave code); None when it cannot run."""
    code = "from enclave.measure import code_digest; print(code_digest())"
    try:
        proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                              text=True, timeout=120, check=False,
                              env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    except (OSError, subprocess.TimeoutExpired):
        return None
    digest = proc.stdout.strip()
    return digest if proc.returncode == 0 and re.fullmatch(r"[0-9a-f]{64}", digest) else None


def _normalised_copy(src: Path, dst: Path) -> None:
    """Copy the content only; mode 0755 when the source is executable, else 0644; the fixed
    build time (``SOURCE_DATE_EPOCH``) as its times."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    os.chmod(dst, 0o755 if src.stat().st_mode & 0o111 else 0o644)
    os.utime(dst, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH))


def _normalise_dirs(top: Path) -> None:
    # children first (their utime changes the parent's mtime); 0755: the image's readers need it
    for path in sorted(top.rglob("*"), reverse=True):
        if path.is_dir():
            os.chmod(path, 0o755)  # noqa: S103
            os.utime(path, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH))
    os.chmod(top, 0o755)  # noqa: S103
    os.utime(top, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH))


def assemble_context(lock_path: Path, target: ImageTarget = WORKER,
                     out_dir: Path | None = None) -> Path:
    """Lay out the build context: Dockerfile, lock, wheels (hard links when possible), sources.

    Only ``target.source_packages`` are copied, file by file in sorted order
    (:func:`source_files`: no bytecode caches), from the working tree. Every file but the
    wheels (which never reach the final image) gets mode 0644 (0755 if executable) and the
    fixed time ``SOURCE_DATE_EPOCH``, every directory 0755: the host's umask, checkout time
    and copy order do not reach the image.
    """
    out_dir = out_dir or BUILD_DIR / target.name
    wheel_dir = target.wheel_dir
    shutil.rmtree(out_dir, ignore_errors=True)
    (out_dir / "wheels").mkdir(parents=True)
    _normalised_copy(target.image_dir / "Dockerfile", out_dir / "Dockerfile")
    _normalised_copy(lock_path, out_dir / "requirements.lock")
    for _, entries in [read_lock(lock_path)]:
        for e in entries:
            src, dst = wheel_dir / e.filename, out_dir / "wheels" / e.filename
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
    for package in target.source_packages:
        for name in source_files(package):
            _normalised_copy(REPO_ROOT / name, out_dir / "src" / name)
    _normalise_dirs(out_dir)
    return out_dir


def docker_build(context: Path, *, base: str, tag: str, client: Any = None, nocache: bool = False,
                 build_args: Mapping[str, str] | None = None,
                 log: Callable[[str], None] = print) -> str:
    """``docker build --network none --build-arg BASE=base -t tag context``; returns the image id.

    ``build_args`` are further ``--build-arg`` values; ``nocache`` is ``--no-cache``.

    Raises ImageBuildError with the build's last output lines on failure.
    """
    import docker  # imported here: the SDK is a coordinator dependency, not a base one

    client = client or docker.from_env(timeout=600)
    tail: list[str] = []
    image_id = ""
    buildargs = {**(build_args or {}), "BASE": base}
    for chunk in client.api.build(path=str(context), tag=tag, buildargs=buildargs,
                                  network_mode="none", rm=True, forcerm=True, pull=False,
                                  nocache=nocache, decode=True):
        if "stream" in chunk:
            text = str(chunk["stream"]).rstrip()
            if text:
                tail = [*tail, text][-40:]
                log(text)
        if "aux" in chunk and "ID" in chunk["aux"]:
            image_id = str(chunk["aux"]["ID"])
        if "error" in chunk:
            raise ImageBuildError("docker build failed:\n" + "\n".join(tail)
                                  + "\n" + str(chunk["error"]))
    if not image_id:
        image_id = str(client.images.get(tag).id)
    return image_id


def build_args_for(target: ImageTarget) -> dict[str, str]:
    """The ``--build-arg`` values of ``target`` besides ``BASE`` (the worker's fixed
    ``SOURCE_DATE_EPOCH``)."""
    return {"SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH)} if target is WORKER else {}


def build_image(target: ImageTarget = WORKER, *, base: str = OFFLINE_BASE,
                tag: str | None = None, arch: str | None = None, relock: bool = False,
                nocache: bool = False, client: Any = None,
                log: Callable[[str], None] = print) -> str:
    """Prepare wheels, assemble the context and build ``target``; return the Docker image id.

    The id is the engine's handle only; the worker's measurement is the tree digest of the
    image (:func:`coordinator.imagemeasure.measure_image`). Raises ImageBuildError on any
    failing step.
    """
    lock_path = prepare_wheels(target, arch=arch, relock=relock, log=log)
    state = source_tree_state(target.source_packages)
    if state.endswith("-dirty"):
        log(f"note: building from uncommitted sources ({state}): a rebuild of commit "
            f"{state.removesuffix('-dirty')} will measure differently")
    context = assemble_context(lock_path, target)
    return docker_build(context, base=base, tag=tag or target.default_tag, client=client,
                        nocache=nocache, build_args=build_args_for(target), log=log)


def build_worker_image(*, base: str = OFFLINE_BASE, tag: str = DEFAULT_TAG,
                       arch: str | None = None, relock: bool = False, client: Any = None,
                       log: Callable[[str], None] = print) -> str:
    """Build the worker image and return its Docker image id (see :func:`build_image`)."""
    return build_image(WORKER, base=base, tag=tag, arch=arch, relock=relock, client=client,
                       log=log)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry: ``build`` or ``lock``.

    ``build`` prints, on stdout, the worker's measurement (its tree digest) for the worker and
    the Docker image id for the coordinator; ``lock`` the lock file's path.
    """
    parser = argparse.ArgumentParser(prog="python -m coordinator.images",
                                     description="Build sealroom images offline.")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="download/verify wheels and build an image")
    build.add_argument("--target", choices=sorted(TARGETS), default="worker")
    build.add_argument("--base", default=os.environ.get("SEALROOM_IMAGE_BASE", OFFLINE_BASE),
                       help=f"base image (default {OFFLINE_BASE}; python:3.11-slim with a registry)")
    build.add_argument("--tag", default=None, help="image tag (default per target)")
    build.add_argument("--relock", action="store_true", help="resolve dependencies afresh")
    build.add_argument("--no-cache", action="store_true", help="build every step afresh")
    lock = sub.add_parser("lock", help="only download the wheels and write the lock")
    lock.add_argument("--target", choices=sorted(TARGETS), default="worker")
    lock.add_argument("--relock", action="store_true")
    args = parser.parse_args(argv)
    target = TARGETS[args.target]

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        if args.command == "lock":
            print(prepare_wheels(target, relock=args.relock, log=log))
            return 0
        image_id = build_image(target, base=args.base, tag=args.tag, relock=args.relock,
                               nocache=args.no_cache, log=log)
        if target is not WORKER:
            print(image_id)
            return 0
        from coordinator.imagemeasure import connect, measure_image

        log(f"docker image id {image_id} (the engine's handle, not the measurement)")
        print(measure_image(connect(), image_id))
    except ImageBuildError as exc:
        log(f"error: {exc}")
        return 1
    except SealroomError as exc:
        log(f"error: {exc.message}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
