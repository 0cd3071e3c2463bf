""".ci/run: its steps, their order, and how failures are reported (with a stand-in Python that records calls)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FAKE_PYTHON = """#!/usr/bin/env bash
# records its arguments; exits with the code the test asked for that step
echo "$*" >> "$FAKE_LOG"
case "$*" in
  *"pip install"*) exit "${RC_INSTALL:-0}" ;;
  *"ruff check"*) exit "${RC_RUFF_CHECK:-0}" ;;
  *"ruff format"*) exit "${RC_RUFF_FORMAT:-0}" ;;
  *"pytest"*) exit "${RC_PYTEST:-0}" ;;
esac
exit 99
"""


@pytest.fixture
def ci(tmp_path):
    """Run a copy of .ci/run in a scratch checkout with a stand-in Python; returns (exit code, output, calls)."""
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    (tmp_path / ".ci").mkdir()
    shutil.copy2(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "calls.log"

    def run(**codes: int):
        log.write_text("")
        env = {**os.environ, "PYTHON": str(fake), "FAKE_LOG": str(log), **{k: str(v) for k, v in codes.items()}}
        res = subprocess.run(
            ["bash", str(tmp_path / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60
        )
        return res.returncode, res.stdout + res.stderr, log.read_text().splitlines()

    return run


def test_all_steps_run_in_order_and_pass(ci):
    rc, out, calls = ci()
    assert rc == 0, out
    assert calls == [
        "-m pip install -q -e .[test]",
        "-m ruff check .",
        "-m ruff format --check .",
        "-m pytest -q",
    ]
    assert "all steps passed" in out


def test_the_test_step_is_the_readme_command():
    readme = (ROOT / "README.md").read_text()
    assert "pip install -e '.[test]' && python3 -m pytest -q" in readme
    assert 'step "pytest" "$PYTHON" -m pytest -q' in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize(
    "codes, failed_steps",
    [
        ({"RC_RUFF_CHECK": 1}, ["ruff check"]),
        ({"RC_RUFF_FORMAT": 1, "RC_PYTEST": 1}, ["ruff format", "pytest"]),
        ({"RC_PYTEST": 5}, ["pytest"]),
    ],
)
def test_a_failing_step_fails_the_run_and_is_named(ci, codes, failed_steps):
    rc, out, calls = ci(**codes)
    assert rc == 1, out
    assert len(calls) == 4, "the other steps still run"
    for name in failed_steps:
        assert f"step '{name}' FAILED" in out
    assert f"CI: failed: {', '.join(failed_steps)}" in out
    if codes.get("RC_PYTEST") == 5:
        assert "collected no tests" in out


def test_a_failed_install_stops_the_run(ci):
    rc, out, calls = ci(RC_INSTALL=1)
    assert rc == 1 and len(calls) == 1
    assert "failed: install" in out
