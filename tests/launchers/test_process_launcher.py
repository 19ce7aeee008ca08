"""ProcessLauncher: the same job protocol as the container launcher, without isolation."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from coordinator.launchers import OutputLimitError, ProcessLauncher
from coordinator.launchers.process import UNISOLATED_SETTINGS, rewrite_job_paths

WORKER = '''
import json, os, sys, time
mode = sys.argv[1]
if mode == "report":
    job = sys.argv[2]
    secrets = {n: open(os.path.join(job, "secrets", n)).read()
               for n in sorted(os.listdir(os.path.join(job, "secrets")))}
    sys.stderr.write("stderr must never be returned\\n")
    print(json.dumps({"args": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ),
                      "secrets": secrets}))
elif mode == "exit":
    sys.stdout.write("partial")
    sys.exit(int(sys.argv[2]))
elif mode == "sleep":
    time.sleep(60)
elif mode == "big":
    sys.stdout.buffer.write(b"x" * int(sys.argv[2]))
'''


@pytest.fixture
def launcher(tmp_path: Path) -> ProcessLauncher:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    return ProcessLauncher(_entrypoint=[sys.executable, str(script)])


@pytest.fixture
def job(tmp_path: Path) -> Path:
    path = tmp_path / "job"
    path.mkdir()
    (path / "job.json").write_text("{}")
    return path


def test_runs_with_job_dir_and_secrets(launcher: ProcessLauncher, job: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEALROOM_DATABASE_URL", "postgresql://secret")
    result = launcher.launch(job, ["report", "/job", "--out", "/job/out.json"],
                             {"worker.key": b"k1"}, run_id="r1")
    assert result.exit_code == 0 and result.ok
    assert result.isolation == "none"
    assert result.settings == UNISOLATED_SETTINGS
    assert not result.oom_killed and not result.timed_out
    assert result.run_id == "r1"
    report = json.loads(result.stdout)
    assert report["args"] == ["report", str(job.resolve()), "--out",
                              str(job.resolve() / "out.json")]
    # the launcher hands over the digest of the settings it checked with the secrets
    assert report["secrets"] == {"worker.key": "k1", "isolation.digest": result.settings_digest}
    assert "SEALROOM_DATABASE_URL" not in report["env"]
    assert b"stderr must never" not in result.stdout
    assert list((job / "secrets").iterdir()) == [], "secrets are removed after the run"


def test_exit_code_and_partial_stdout(launcher: ProcessLauncher, job: Path) -> None:
    result = launcher.launch(job, ["exit", "7"])
    assert result.exit_code == 7
    assert result.stdout == b"partial"
    assert not result.ok and result.resource_error() is None


def test_deadline_kills_and_reports_timeout(launcher: ProcessLauncher, job: Path) -> None:
    result = launcher.launch(job, ["sleep"], deadline_s=0.5)
    assert result.timed_out
    assert result.exit_code != 0
    error = result.resource_error()
    assert error is not None and error.code == "E_RESOURCE"


def test_output_cap(tmp_path: Path, job: Path) -> None:
    script = tmp_path / "w.py"
    script.write_text(WORKER)
    capped = ProcessLauncher(max_output_bytes=1000, _entrypoint=[sys.executable, str(script)])
    with pytest.raises(OutputLimitError) as info:
        capped.launch(job, ["big", "5000"])
    assert info.value.code == "E_RESOURCE"


def test_refuses_preexisting_secrets(launcher: ProcessLauncher, job: Path) -> None:
    (job / "secrets").mkdir()
    (job / "secrets" / "planted").write_text("x")
    with pytest.raises(Exception) as info:
        launcher.launch(job, ["exit", "0"])
    assert getattr(info.value, "code", None) == "E_CONFIG"


def test_refuses_bad_secret_names(launcher: ProcessLauncher, job: Path) -> None:
    with pytest.raises(Exception) as info:
        launcher.launch(job, ["exit", "0"], {"../escape": b"x"})
    assert getattr(info.value, "code", None) == "E_CONFIG"
    assert not (job / "escape").exists()


def test_missing_job_dir(launcher: ProcessLauncher, tmp_path: Path) -> None:
    with pytest.raises(Exception) as info:
        launcher.launch(tmp_path / "nope", ["exit", "0"])
    assert getattr(info.value, "code", None) == "E_CONFIG"


def test_default_command_is_python_m_enclave(job: Path) -> None:
    cmd = ProcessLauncher().command(job, ["run", "--job", "/job"])
    assert cmd == [sys.executable, "-m", "enclave", "run", "--job", str(job)]


def test_rewrite_job_paths_only_touches_the_mount() -> None:
    assert rewrite_job_paths(["/job", "/job/a", "/jobs", "x/job"], Path("/d")) == [
        "/d", "/d/a", "/jobs", "x/job"]


def test_environment_is_minimal() -> None:
    env = ProcessLauncher(extra_env={"X": "1"}).environment()
    assert set(env) == {"PATH", "LANG", "PYTHONDONTWRITEBYTECODE", "X"}
    assert os.environ.get("HOME", "") not in env.values() or not os.environ.get("HOME")
