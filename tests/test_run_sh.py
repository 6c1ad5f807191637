"""run.sh's dispatch: which entrypoint each command line runs, with which flags (the
Python it calls is replaced by a recorder; the install is marked done)."""

import hashlib
import shutil
import subprocess

import pytest

from conftest import REPO

STAMPED = ("requirements.txt", "setup.py", "wtal_tf/features/install_weights.py")
RECORDER = """#!/bin/sh
echo "$*" >> "$(dirname "$0")/calls"
"""


@pytest.fixture
def run_sh(tmp_path):
  """Runs a copy of run.sh whose .venv/bin/python records its arguments; returns
  (exit status, stderr, the recorded calls)."""
  for name in ("run.sh",) + STAMPED:
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / name, tmp_path / name)
  python = tmp_path / ".venv" / "bin" / "python"
  python.parent.mkdir(parents=True)
  python.write_text(RECORDER)
  python.chmod(0o755)
  digest = hashlib.sha1(b"".join((REPO / n).read_bytes() for n in STAMPED)).hexdigest()
  (tmp_path / ".venv" / f".installed-{digest[:12]}").touch()

  def run(*args):
    proc = subprocess.run(["bash", "run.sh", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    calls = python.parent / "calls"
    return proc.returncode, proc.stderr, calls.read_text().splitlines() if calls.exists() else []
  return run


def test_flags_alone_run_the_embedded_default_with_them(run_sh):
  status, stderr, calls = run_sh("--train_steps=5")
  assert status == 0, stderr
  assert "installing" not in stderr  # the stamp matched: nothing was installed
  assert calls == [
      "-m wtal_tf.tools.make_synthetic --output_dir=data/synthetic",
      "-m wtal_tf.train_eval --flagfile=flags/synthetic.cfg --data_dir=data/synthetic "
      "--model_dir=runs/synthetic --train_steps=5"]


def test_no_argument_and_a_named_dataset(run_sh):
  assert run_sh()[2][-1] == ("-m wtal_tf.train_eval --flagfile=flags/synthetic.cfg "
                             "--data_dir=data/synthetic --model_dir=runs/synthetic")
  status, _, calls = run_sh("thumos14", "--data_dir=/d", "--seed=1")
  assert status == 0 and calls[-1] == (
      "-m wtal_tf.train_eval --flagfile=flags/thumos14.cfg --data_dir=/d "
      "--model_dir=runs/thumos14 --data_dir=/d --seed=1")


def test_an_unknown_command_is_the_usage_line(run_sh):
  status, stderr, calls = run_sh("thumos")
  assert status == 2 and calls == []
  assert stderr.startswith("usage: ./run.sh [synthetic|thumos14") and len(stderr.splitlines()) == 1
