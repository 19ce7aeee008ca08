"""The README's "Walkthrough by role" works as written, from a fresh clone.

The commands are not copied here: they are read from ``README.md`` itself. The convention
(the README says that this test runs its blocks):

* In the ``## Walkthrough by role`` section, every fenced ``sh`` block is preceded by an HTML
  comment ``<!-- walkthrough: ROLE -->``; it is run by that role (``operator``, ``brand``,
  ``publisher``, ``auditor``), line by line, in the order the README gives. A block preceded by
  ``<!-- walkthrough: ROLE writes FILE -->`` is a file that role writes (the room file).
  An ``sh`` block without a marker fails the test: nothing the walkthrough shows goes unrun.
* Each role is its own machine: its own ``HOME`` (so ``~`` and the default ``~/.sealroom``
  are its own), its own new virtual environment (``python -m venv``; ``pip`` is the dev venv's
  pip, and the dev venv's packages are reachable through a ``.pth`` file because the test is
  offline), and its own terminal: a line runs in ``bash -c`` with what earlier lines of that
  role exported. Every role works in the same folder, a copy of this working tree as a fresh
  clone has it (tracked and new, not ignored, files); that folder stands for the hand-over of
  the files the roles send each other (``.pub`` files, the room file, manifest, receipt, log).
* A ``pip install`` line runs as written: it builds the package from that clone and installs it
  (not editable) into the role's environment. From then on the role's ``sealroom`` is that
  installed copy, and the role's Python can import only what that line brings in: the
  distributions that ``sealroom[EXTRAS]`` requires, transitively; every other package of the
  dev venv raises ``ModuleNotFoundError`` there. So a role that needs more than its install
  line says fails here.
* A line ending in ``&`` starts a service in the background, as the shell does; the test
  then waits until the coordinator answers ``/healthz`` (a reader waits for its start-up line),
  and stops that process group at the end.
* Placeholders, and only these, are substituted: the port ``8700`` by a free port, and the
  capitalised words the README says stand for earlier output — ``PLATFORM_KEY``, ``IMAGE_ID``,
  ``CODE_DIGEST`` (from ``worker provision``), ``DIGEST`` (from ``bundle new``), ``RUN`` (from
  ``run``) — by what those commands printed. The data files the README uploads
  (``customers.csv``, ``visitors.csv``) are generated here, a few hundred rows each.

Every line must exit 0; a few outputs are checked too (``receipt verify`` says ``VALID``...).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import (
    Distribution,
    PackageNotFoundError,
    distribution,
    packages_distributions,
)
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from coordinator.cli.demo import free_port
from coordinator.cli.demo_data import generate
from tests.cli.conftest import REPO

README = REPO / "README.md"
SECTION = "## Walkthrough by role"
README_PORT = "8700"
PLACEHOLDERS = ("PLATFORM_KEY", "IMAGE_ID", "CODE_DIGEST", "DIGEST", "RUN")
# where each placeholder's value is printed (by `worker provision`, `bundle new`, `run`)
PRINTED = {
    "PLATFORM_KEY": r"platform key\s+([0-9a-f]{64})",
    "IMAGE_ID": r"measurement\s+image\s+(\S+)",
    "CODE_DIGEST": r"^\s*code\s+([0-9a-f]{64})",
    "DIGEST": r"^bundle ([0-9a-f]{64})",
    "RUN": r"^run (\S+): succeeded",
}
# what some commands must print besides exiting 0
EXPECT = {
    "worker provision": "platform key",
    "room verify": "signed by all 2 parties",
    "data upload": "uploaded",
    "bundle review": "template incrementality (plan regenerated and identical)",
    "result get": "receipt verified",
    "receipt verify": ": VALID",
    "log verify": "log VERIFIED",
}
# the walkthrough must keep showing these (the list); each is run below
REQUIRED = (
    "pip install '.[coordinator,enclave]'", "pip install '.[party]'", "pip install .",
    "sealroom coordinator serve", "worker provision", "sealroom keys new", "sealroom room new",
    "sealroom room sign", "sealroom room verify", "sealroom room submit", "sealroom data upload",
    "sealroom bundle new --template", "sealroom bundle submit", "sealroom bundle review",
    "sealroom bundle approve", "sealroom run", "sealroom result get", "sealroom receipt verify",
    "sealroom log verify", "sealroom log export",
)
ALWAYS_AVAILABLE = {"pip", "setuptools", "wheel", "sealroom"}
LINE_TIMEOUT = 180.0


# -- reading the README ---------------------------------------------------------------------


@dataclass
class Block:
    role: str
    lineno: int  # README line of the fence
    lang: str
    body: list[tuple[int, str]]  # (README line, text)
    writes: str | None = None

    def commands(self) -> list[tuple[int, str]]:
        """Shell lines: continuations joined, blank and comment-only lines dropped."""
        out: list[tuple[int, str]] = []
        pending: tuple[int, str] | None = None
        for lineno, text in self.body:
            if pending is None:
                if not text.strip() or text.lstrip().startswith("#"):
                    continue
                pending = (lineno, "")
            joined = pending[1] + text
            if joined.endswith("\\"):
                pending = (pending[0], joined[:-1])
                continue
            out.append((pending[0], joined.strip()))
            pending = None
        assert pending is None, f"README.md:{self.lineno}: a continuation line ends the block"
        return out


MARKER = re.compile(r"<!--\s*walkthrough:\s*(\w+)(?:\s+writes\s+(\S+))?\s*-->")


def walkthrough_blocks(text: str) -> list[Block]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == SECTION)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))
    blocks: list[Block] = []
    marker: re.Match[str] | None = None
    i = start + 1
    while i < end:
        line = lines[i]
        found = MARKER.search(line)
        if found:
            assert marker is None, f"README.md:{i + 1}: two markers without a block"
            marker = found
        elif line.startswith("```"):
            lang = line[3:].strip()
            close = next(j for j in range(i + 1, end) if lines[j].startswith("```"))
            body = [(j + 1, lines[j]) for j in range(i + 1, close)]
            if marker is None:
                assert lang != "sh", (f"README.md:{i + 1}: an sh block of the walkthrough "
                                      "without a <!-- walkthrough: ROLE --> marker")
            else:
                blocks.append(Block(marker.group(1), i + 1, lang, body, marker.group(2)))
                marker = None
            i = close
        elif line.strip() and marker is not None:
            raise AssertionError(f"README.md:{i + 1}: text between a marker and its block")
        i += 1
    assert marker is None, "a walkthrough marker without a block"
    return blocks


# -- the machines of the roles ---------------------------------------------------------------


def _dev_site_packages() -> list[str]:
    paths = sysconfig.get_paths()
    return sorted({paths["purelib"], paths["platlib"]})


def _requirement_closure(root: Distribution, extras: set[str]) -> set[str]:
    """Canonical names of every distribution ``root[extras]`` needs, transitively (as
    installed in the dev venv)."""
    names: set[str] = set()
    seen: set[tuple[str, frozenset[str]]] = set()
    todo: list[tuple[Distribution, set[str]]] = [(root, extras)]
    while todo:
        dist, wanted = todo.pop()
        for raw in dist.requires or []:
            req = Requirement(raw)
            if req.marker is not None and not any(
                    req.marker.evaluate({"extra": e}) for e in (wanted or {""})):
                continue
            key = (canonicalize_name(req.name), frozenset(req.extras))
            if key in seen:
                continue
            seen.add(key)
            names.add(key[0])
            try:
                todo.append((distribution(req.name), set(req.extras)))
            except PackageNotFoundError:
                pass  # not in the dev venv: nothing to hide either
    return names


HIDER = '''"""Written by tests/cli/test_readme_walkthrough.py: packages this role's pip install line
did not bring in are absent here, as on a machine that ran only that line."""
import sys

HIDDEN = frozenset({hidden!r})


class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            raise ModuleNotFoundError(
                f"No module named {{name!r}} (not installed by this role's pip install line)",
                name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
'''


@dataclass
class Machine:
    """One role: its own home, virtual environment and terminal state."""

    role: str
    root: Path
    folder: Path  # the clone every role works in
    lines_run: list[str] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def venv(self) -> Path:
        return self.root / "venv"

    @property
    def site(self) -> Path:
        return self.venv / Path(sysconfig.get_path("purelib")).relative_to(sys.prefix)

    def create(self) -> None:
        self.home.mkdir(parents=True)
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(self.venv)],
                       check=True)
        assert self.site.is_dir(), self.site
        (self.site / "_walkthrough_dev_venv.pth").write_text("\n".join(_dev_site_packages()) + "\n")
        pip = self.venv / "bin" / "pip"
        pip.write_text(f"#!{self.venv / 'bin' / 'python'}\nimport sys\n"
                       "from pip._internal.cli.main import main\nsys.exit(main())\n")
        pip.chmod(0o755)

    def env(self) -> dict[str, str]:
        path = [str(self.venv / "bin")] + [
            d for d in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
            if d and not (Path(d) / "sealroom").exists() and Path(d) != Path(sys.executable).parent]
        env = {"HOME": str(self.home), "PATH": os.pathsep.join(path),
               "VIRTUAL_ENV": str(self.venv), "LANG": "C.UTF-8",
               # offline: pip builds with the setuptools it can see and resolves from what is
               # installed; no index, no configuration of this host
               "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0",
               "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        for name in ("TMPDIR", "CI"):
            if os.environ.get(name):
                env[name] = os.environ[name]
        return env

    def script(self, line: str) -> str:
        state = self.root / "exported.sh"
        return (f"[ -f {state} ] && . {state}\n{line}\n__rc=$?\n"
                f"export -p > {state}\nexit $__rc\n")

    def after_install(self, line: str, available: dict[str, list[str]]) -> None:
        """Hide every dev-venv package the pip install line just run does not require."""
        found = re.fullmatch(r"pip install (['\"]?)\.(?:\[([\w,\s-]*)\])?\1", line)
        assert found, f"the walkthrough installs only the clone: {line}"
        extras = {e.strip() for e in (found.group(2) or "").split(",") if e.strip()}
        infos = list(self.site.glob("sealroom-*.dist-info"))
        assert len(infos) == 1, f"{line} installed no sealroom distribution into {self.venv}"
        keep = _requirement_closure(Distribution.at(infos[0]), extras) | ALWAYS_AVAILABLE
        hidden = sorted(
            module for module, dists in available.items()
            if module not in sys.stdlib_module_names and module.isidentifier()
            and not any(canonicalize_name(d) in keep for d in dists))
        (self.site / "_walkthrough_hidden.py").write_text(HIDER.format(hidden=hidden))
        (self.site / "_walkthrough_hidden.pth").write_text("import _walkthrough_hidden\n")


@dataclass
class Walkthrough:
    root: Path
    folder: Path
    port: int
    machines: dict[str, Machine] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)
    services: list[tuple[int, Path]] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)
    available: dict[str, list[str]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def machine(self, role: str) -> Machine:
        if role not in self.machines:
            m = Machine(role, self.root / "machines" / role, self.folder)
            m.create()
            self.machines[role] = m
        return self.machines[role]

    def substitute(self, text: str, where: str) -> str:
        text = re.sub(rf"\b{README_PORT}\b", str(self.port), text)
        for name in PLACEHOLDERS:
            if name in self.values:
                text = re.sub(rf"\b{name}\b", self.values[name], text)
        code = re.sub(r"\s#.*$", "", text, flags=re.M)
        left = [n for n in PLACEHOLDERS if re.search(rf"\b{n}\b", code)]
        assert not left, f"{where}: {left} used before any command printed it"
        return text

    def logs(self) -> str:
        tails = []
        for _pgid, log in self.services:
            tails.append(f"--- {log.name} (tail)\n" + log.read_text(errors="replace")[-3000:])
        return "\n".join(tails)

    def fail(self, what: str) -> None:
        history = "\n".join(self.transcript[-6:])
        pytest.fail(f"{what}\n\n--- last lines run\n{history}\n{self.logs()}", pytrace=False)

    def run(self, role: str, lineno: int, line: str) -> str:
        m = self.machine(role)
        command = self.substitute(line, f"README.md:{lineno}")
        where = f"README.md:{lineno} [{role}] $ {command}"
        self.transcript.append(where)
        m.lines_run.append(line)
        if re.search(r"(?<!&)&\s*$", command):
            self._background(m, command, where)
            return ""
        started = time.monotonic()
        try:
            # stdin is no terminal, as in CI: a command that would ask must say --yes
            proc = subprocess.run(["bash", "--noprofile", "--norc", "-c", m.script(command)],
                                  cwd=self.folder, env=m.env(), capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL, timeout=LINE_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            self.fail(f"{where}\ndid not finish within {LINE_TIMEOUT:.0f} s")
        took = time.monotonic() - started
        self.transcript.append(f"    exit {proc.returncode} in {took:.1f} s\n"
                               + _indent(proc.stdout) + _indent(proc.stderr))
        if proc.returncode != 0:
            self.fail(f"{where}\nexited {proc.returncode}\n--- stdout\n{proc.stdout}\n"
                      f"--- stderr\n{proc.stderr}")
        for needle, expected in EXPECT.items():
            if needle in command and expected not in proc.stdout:
                self.fail(f"{where}\ndid not print {expected!r}\n--- stdout\n{proc.stdout}")
        for name, pattern in PRINTED.items():
            found = re.search(pattern, proc.stdout, flags=re.M)
            if found:
                self.values[name] = found.group(1)
        if line.startswith("pip install"):
            m.after_install(line, self.available)
        return proc.stdout

    def _background(self, m: Machine, command: str, where: str) -> None:
        log = self.root / f"{m.role}-service-{len(self.services)}.log"
        with open(log, "wb") as sink:
            proc = subprocess.Popen(["bash", "--noprofile", "--norc", "-c", m.script(command)],
                                    cwd=self.folder, env=m.env(), stdout=sink,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.services.append((proc.pid, log))
        if proc.wait(timeout=30) != 0:
            self.fail(f"{where}\nthe shell exited {proc.returncode}")
        if "coordinator serve" not in command:
            return
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    self.transcript.append("    (answers /healthz)")
                    return
            except httpx.HTTPError:
                pass
            if not _group_alive(proc.pid):
                self.fail(f"{where}\nthe coordinator exited")
            time.sleep(0.1)
        self.fail(f"{where}\nthe coordinator did not answer /healthz within 60 s")

    def write_file(self, role: str, block: Block) -> None:
        assert block.writes is not None
        self.machine(role)
        text = self.substitute("\n".join(t for _, t in block.body) + "\n",
                               f"README.md:{block.lineno}")
        (self.folder / block.writes).write_text(text)
        self.transcript.append(f"README.md:{block.lineno} [{role}] writes {block.writes}")

    def stop(self) -> None:
        for pgid, _log in self.services:
            _stop_group(pgid)


def _indent(text: str) -> str:
    return "".join(f"    | {line}\n" for line in text.splitlines()[-15:])


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_group(pgid: int) -> None:
    """Stop the process group this test started for a background line."""
    if not _group_alive(pgid):
        return
    os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _group_alive(pgid):
        time.sleep(0.1)
    if _group_alive(pgid):
        os.killpg(pgid, signal.SIGKILL)


def fresh_clone(dest: Path) -> Path:
    """The working tree as a fresh clone of it would hold: tracked and new files that are not
    ignored (the venv, caches and build output stay behind)."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = REPO / name
        if src.is_file() and not src.is_symlink():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(src.read_bytes())
            target.chmod(src.stat().st_mode & 0o777)
    return dest


@pytest.fixture()
def walkthrough(tmp_path: Path) -> Iterator[Walkthrough]:
    folder = fresh_clone(tmp_path / "sealroom")
    w = Walkthrough(tmp_path, folder, free_port())
    w.available = {k: list(v) for k, v in packages_distributions().items()}
    try:
        yield w
    finally:
        w.stop()


# -- the test --------------------------------------------------------------------------------


def test_the_readme_walkthrough_runs_as_written(walkthrough: Walkthrough) -> None:
    started = time.monotonic()
    blocks = walkthrough_blocks(README.read_text(encoding="utf-8"))
    roles = {b.role for b in blocks}
    assert {"operator", "brand", "publisher", "auditor"} <= roles, roles
    shown = [line for b in blocks if b.lang == "sh" for _, line in b.commands()]
    for command in REQUIRED:
        assert any(line.startswith(command) or f" {command}" in f" {line}" for line in shown), (
            f"the README's walkthrough no longer shows `{command}`")
    # the parties' data: tiny, but every group above the room's minimum group size of 50
    generate(walkthrough.folder, brand_rows=400, publisher_rows=500, overlap=300)

    ran = 0
    for block in blocks:
        if block.writes:
            walkthrough.write_file(block.role, block)
            continue
        assert block.lang == "sh", f"README.md:{block.lineno}: a walkthrough block is sh or a file"
        for lineno, line in block.commands():
            walkthrough.run(block.role, lineno, line)
            ran += 1
    assert ran == len(shown)

    folder = walkthrough.folder
    rows = dict(line.split(",")[:2] for line in (folder / "result.csv").read_text().splitlines())
    assert {"absolute_lift", "exposed_users", "control_users"} <= set(rows), rows
    assert (folder / "receipt.json").is_file() and (folder / "log.json").is_file()
    # every role's sealroom was the copy its own install line put into its own environment
    for m in walkthrough.machines.values():
        assert (m.venv / "bin" / "sealroom").is_file(), m.role
        assert (m.site / "sdk" / "cli" / "__init__.py").is_file(), m.role
    # ... and could import only what that line brought in (a check of this test's machinery)
    probes = {"brand": ("pyarrow", "pandas"), "auditor": ("nacl", "pyarrow"),
              "operator": ("fastapi", "pytest")}
    for role, (present, absent) in probes.items():
        m = walkthrough.machines[role]
        python = str(m.venv / "bin" / "python")
        code = f"import {present}\ntry:\n    import {absent}\nexcept ModuleNotFoundError:\n" \
               f"    pass\nelse:\n    raise SystemExit('{absent} is importable')"
        probe = subprocess.run([python, "-c", code], env=m.env(), cwd=m.home,
                               capture_output=True, text=True, check=False)
        assert probe.returncode == 0, (role, probe.stderr)
    took = time.monotonic() - started
    print("\n".join(walkthrough.transcript))
    print(f"the walkthrough took {took:.1f} s")
    assert took < 120, f"the walkthrough took {took:.0f} s"
