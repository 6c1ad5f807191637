"""run.sh's dispatch: which entrypoint each command line runs, with which flags, from
which folder (the Python it calls is replaced by a recorder; the install is marked done)."""

import hashlib
import shlex
import shutil
import subprocess

import pytest

from conftest import REPO

STAMPED = ("requirements.txt", "setup.py", "wtal_tf/features/install_weights.py")
RECORDER = """#!/bin/sh
printf '%s\\037' "$@" >> "$(dirname "$0")/calls"
echo >> "$(dirname "$0")/calls"
pwd >> "$(dirname "$0")/folders"
"""  # each call a line, its arguments ended by \x1f (an empty one, or spaces, stay visible)


@pytest.fixture
def run_sh(tmp_path):
  """Runs a copy of run.sh (in tmp_path/repo) from `cwd` (default tmp_path/repo) whose
  .venv/bin/python records its arguments and folder; returns (exit status, stdout,
  stderr, the recorded calls (each its arguments with the copy's folder as HERE, joined as
  a shell would quote them), the folders). `script`: run.sh as named on the command line."""
  here = tmp_path / "re po"  # a space in the path
  for name in ("run.sh",) + STAMPED:
    (here / name).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / name, here / name)
  python = here / ".venv" / "bin" / "python"
  python.parent.mkdir(parents=True)
  python.write_text(RECORDER)
  python.chmod(0o755)
  digest = hashlib.sha1(b"".join((REPO / n).read_bytes() for n in STAMPED)).hexdigest()
  (here / ".venv" / f".installed-{digest[:12]}").touch()

  def run(*args, cwd=here, script=None):
    proc = subprocess.run(["bash", script or str(here / "run.sh"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)
    record = [python.parent / f for f in ("calls", "folders")]
    calls, folders = ([line.replace(str(here), "HERE") for line in f.read_text().splitlines()]
                      if f.exists() else [] for f in record)
    calls = [shlex.join(line.split("\x1f")[:-1]) for line in calls]
    for f in record:
      f.unlink(missing_ok=True)
    return proc.returncode, proc.stdout, proc.stderr, calls, folders
  return run


def test_flags_alone_run_the_embedded_default_with_them(run_sh):
  status, _, stderr, calls, _ = run_sh("--train_steps=5")
  assert status == 0, stderr
  assert "installing" not in stderr  # the stamp matched: nothing was installed
  assert calls == [
      "-m wtal_tf.tools.make_synthetic --output_dir=HERE/data/synthetic",
      "-m wtal_tf.train_eval --flagfile=HERE/flags/synthetic.cfg "
      "--data_dir=HERE/data/synthetic --model_dir=HERE/runs/synthetic --train_steps=5"]


def test_no_argument_and_a_named_dataset(run_sh):
  assert run_sh()[3][-1] == ("-m wtal_tf.train_eval --flagfile=HERE/flags/synthetic.cfg "
                             "--data_dir=HERE/data/synthetic --model_dir=HERE/runs/synthetic")
  status, _, _, calls, _ = run_sh("thumos14", "--data_dir=/d", "--seed=1")
  assert status == 0 and calls == [
      "-m wtal_tf.train_eval --flagfile=HERE/flags/thumos14.cfg --data_dir=/d "
      "--model_dir=HERE/runs/thumos14 --data_dir=/d --seed=1"]


@pytest.mark.parametrize("spelling", ["--data_dir", "--data_dir=", "-data_dir", "-data_dir="])
def test_a_data_dir_in_any_spelling_absl_takes_is_the_one_used(run_sh, tmp_path, spelling):
  """Found by a new user: `--data_dir D` generated the embedded dataset (and mv its
  microvideos, passed as --extra_train) in data/synthetic, then trained on D."""
  d = tmp_path / "d"
  (d / "micro").mkdir(parents=True)
  (d / "gt.json").write_text("{}")  # a dataset there already: nothing to generate
  (d / "micro" / "labels.csv").write_text("")
  given = [spelling + str(d)] if spelling.endswith("=") else [spelling, str(d)]
  for command in ("synthetic", "mv"):
    status, _, _, calls, _ = run_sh(command, *given)
    assert status == 0 and len(calls) == 1, calls
    assert f"--data_dir={d} " in calls[0] and "HERE/data" not in calls[0]
    # (D/micro is not taken unasked: it may hold what an older run.sh generated there)
    assert "--extra_train" not in calls[0]


def test_the_embedded_data_is_generated_only_into_its_own_folder(run_sh, tmp_path):
  """Found by a researcher running the ablation: `./run.sh mv --data_dir=MINE` wrote 915
  synthetic microvideos into MINE/micro, and `./run.sh ablation --data_dir=TYPO`
  generated the synthetic dataset at TYPO and trained on it as if it were the user's."""
  mine, typo = tmp_path / "mine", tmp_path / "typo"
  mine.mkdir()
  (mine / "gt.json").write_text("{}")  # the user's dataset, without microvideos
  for command in (("ablation",), ("mv",), ("synthetic",), ()):
    for d in (mine, typo):
      status, _, _, calls, _ = run_sh(*command, f"--data_dir={d}")
      assert status == 0 and len(calls) == 1 and "make_synthetic" not in calls[0], calls
      assert "--extra_train" not in calls[0]  # (mv then says --extra_train is required)
  assert not typo.exists() and sorted(p.name for p in mine.iterdir()) == ["gt.json"]
  # Its own folder, however named, still gets the dataset and, for mv, the microvideos,
  # unless --extra_train names the user's.
  calls = run_sh("mv", "--data_dir=data/../data/synthetic")[3]
  assert [c.split()[:3] for c in calls] == [
      ["-m", "wtal_tf.tools.make_synthetic", "--output_dir=data/../data/synthetic"],
      ["-m", "wtal_tf.tools.make_synthetic", "--output_dir=data/../data/synthetic/micro"],
      ["-m", "wtal_tf.mv", "--flagfile=HERE/flags/synthetic.cfg"]]
  assert "--extra_train=data/../data/synthetic/micro" in calls[-1]
  calls = run_sh("mv", f"--extra_train={mine}")[3]
  assert len(calls) == 2 and "--microvideos_only" not in calls[0]
  assert calls[-1].count("--extra_train") == 1 and f"--extra_train={mine}" in calls[-1]


@pytest.mark.parametrize("outcome", ["made", "made meanwhile", "failed"])
def test_embedded_data_another_run_made_at_the_same_moment_is_used(run_sh, tmp_path, outcome):
  """Found by a concurrency trial: of two ./run.sh started together on a fresh clone, the
  one whose make_synthetic lost the race to make data/synthetic stopped with its error.
  (Review) Its output stays on stdout, its warnings and errors on stderr."""
  python = tmp_path / "re po" / ".venv" / "bin" / "python"
  made = 'mkdir -p "$out" && echo {} > "$out/gt.json"; '
  python.write_text(python.read_text() + f"""
case "$2" in wtal_tf.tools.make_synthetic)
  out=${{3#--output_dir=}}; echo "W: a warning" >&2
  {made if outcome != "failed" else ""}{'echo "$out"; exit 0' if outcome == "made" else ""}
  echo "error: $out: made by another run meanwhile: that one is kept, this run's is \
discarded" >&2; exit 2 ;;
esac
""")
  status, stdout, stderr, calls, _ = run_sh()
  assert [c.split()[1] for c in calls] == ["wtal_tf.tools.make_synthetic"] + (
      [] if outcome == "failed" else ["wtal_tf.train_eval"])
  data = tmp_path / "re po" / "data" / "synthetic"
  assert stdout == (f"{data}\n" if outcome == "made" else "")
  if outcome == "made":
    assert status == 0 and stderr == "W: a warning\n"
  elif outcome == "made meanwhile":
    assert status == 0 and stderr == (f"note: {data} was made by another run at the same "
                                      "moment: it is used\n")
  else:
    assert status == 2 and stderr == (f"W: a warning\nerror: {data}: made by another run "
                                      "meanwhile: that one is kept, this run's is discarded\n")


def test_paths_given_are_taken_from_the_callers_folder(run_sh, tmp_path):
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  status, _, _, calls, folders = run_sh("extract", "--video_dir=videos", "--output_dir=out",
                                        cwd=elsewhere)
  assert status == 0
  assert calls == ["-m wtal_tf.extract --video_dir=videos --output_dir=out"]
  assert folders == [str(elsewhere)]


@pytest.mark.parametrize("command", [("synthetic", "--help"), ("--helpfull",),
                                     ("ablation", "--help"), ("mv", "synthetic", "-?"),
                                     ("thumos14", "-h")])
def test_an_entrypoints_help_generates_no_data(run_sh, command):
  status, _, _, calls, _ = run_sh(*command)
  assert status == 0 and len(calls) == 1 and command[-1] in calls[0]
  assert "make_synthetic" not in calls[0]


@pytest.mark.parametrize("command", [("help",), ("-h",), ("--help",)])
def test_help_prints_the_commands_and_runs_nothing(run_sh, command):
  status, stdout, _, calls, _ = run_sh(*command)
  assert status == 0 and calls == []
  assert "./run.sh extract --video_dir=DIR" in stdout and not stdout.startswith("#")


def test_an_empty_first_argument_is_the_default_and_arguments_keep_their_bounds(
    run_sh, tmp_path, monkeypatch):
  calls = run_sh("", "--seed=1")[3]
  assert calls[-1].endswith("--model_dir=HERE/runs/synthetic --seed=1")
  calls = run_sh("detect", "--video=a clip.mp4", "--output=", "")[3]
  assert calls == ["-m wtal_tf.detect '--video=a clip.mp4' --output= ''"]
  # run.sh named by a relative path, with a CDPATH that finds it: cd prints the folder
  monkeypatch.setenv("CDPATH", f".:{tmp_path}")
  status, _, stderr, calls, _ = run_sh("extract", cwd=tmp_path, script="re po/run.sh")
  assert status == 0 and calls == ["-m wtal_tf.extract"], stderr


def test_an_unknown_command_is_the_usage_line(run_sh):
  for command in ("thumos", "train"):
    status, _, stderr, calls, _ = run_sh(command)
    assert status == 2 and calls == []
    assert stderr.startswith("usage: ./run.sh [synthetic|thumos14") and len(stderr.splitlines()) == 1
    assert stderr.endswith("; the other tools (train, localize, evaluate, ...): .venv/bin/python "
                           "-m wtal_tf.<verb> (README, Commands)\n")
