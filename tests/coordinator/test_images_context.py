"""The worker's build context is deterministic (coordinator.images): the same files, modes and
times whatever the checkout's umask, times or bytecode caches, so that a rebuild measures the
same. No engine needed."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from coordinator import images


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        out[path.relative_to(root).as_posix()] = (st.st_mode & 0o7777, int(st.st_mtime), digest)
    return out


@pytest.fixture
def empty_lock(tmp_path: Path) -> Path:
    lock = tmp_path / "requirements.lock"
    images.write_lock(lock, "stamp", [])
    return lock


def test_two_assemblies_are_identical_and_normalised(tmp_path: Path, empty_lock: Path) -> None:
    old = os.umask(0o002)  # a group-writable checkout must not leak into the image
    try:
        a = snapshot(images.assemble_context(empty_lock, images.WORKER, tmp_path / "a"))
    finally:
        os.umask(old)
    b = snapshot(images.assemble_context(empty_lock, images.WORKER, tmp_path / "b"))
    assert a == b
    assert "Dockerfile" in a and "requirements.lock" in a and "src/enclave/__main__.py" in a
    assert not any(name.startswith("src/coordinator") for name in a)  # never in the worker
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in a)
    for name, (mode, mtime, digest) in a.items():
        assert mtime == images.SOURCE_DATE_EPOCH, name
        assert mode == (0o755 if digest == "dir" else mode) and mode in (0o644, 0o755), name


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_sources_are_what_a_commit_of_the_tree_would_hold(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "pkg" / "sub").mkdir(parents=True)
    (repo / "pkg" / "__pycache__").mkdir()
    (repo / ".gitignore").write_text("*.log\n__pycache__/\n")
    for name in ("pkg/__init__.py", "pkg/sub/b.py", "pkg/data.sql", "pkg/new.py",
                 "pkg/debug.log", "pkg/__pycache__/x.cpython-311.pyc", "pkg/gone.py"):
        (repo / name).write_text(name)
    _git(repo, "init", "-q")
    _git(repo, "add", "pkg/__init__.py", "pkg/sub/b.py", "pkg/data.sql", "pkg/gone.py")
    (repo / "pkg" / "gone.py").unlink()  # tracked but deleted: not there
    assert images.source_files("pkg", repo) == [
        "pkg/__init__.py", "pkg/data.sql", "pkg/new.py", "pkg/sub/b.py"]
    assert images.source_tree_state(["pkg"], repo) == ""  # no commit yet
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    assert images.source_tree_state(["pkg"], repo).endswith("-dirty")  # new.py, gone.py


def test_outside_git_bytecode_and_hidden_files_stay_out(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    for name in ("pkg/a.py", "pkg/__pycache__/a.cpython-311.pyc", "pkg/.swp", "pkg/b.pyc",
                 "pkg/sub/c.py"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)
    assert images.source_files("pkg", root) == ["pkg/a.py", "pkg/sub/c.py"]
