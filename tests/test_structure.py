"""How the package is put together: host code, the extract driver and the extraction
steps stay free of TensorFlow, and --proposal_source=auto is resolved where the
localization config meets the model."""


import os
import subprocess
import sys

import pytest

from conftest import REPO, frameworks_loaded_by, tiny_config, write_dataset
from wtal_tf import config as C
from wtal_tf.data import datasets as data
from wtal_tf.training import trainer as training
from wtal_tf.inference.predictor import Predictor

HOST_PACKAGES = ("data", "localization", "evaluation", "viz")
HOST_MODULES = tuple(
    f"wtal_tf.{package}.{path.stem}" if path.stem != "__init__" else f"wtal_tf.{package}"
    for package in HOST_PACKAGES for path in sorted((REPO / "wtal_tf" / package).glob("*.py"))
) + ("wtal_tf.contract", "wtal_tf.config", "wtal_tf.errors", "wtal_tf.io_utils")  # the ground floor


def test_host_modules_import_without_tensorflow():
  assert frameworks_loaded_by(HOST_MODULES) == []


def test_the_extraction_steps_import_without_tensorflow():
  """Beam's Dask runner has the scheduler unpickle the steps: it must not wait for
  TensorFlow (the workers import it when they build their Extractor)."""
  assert frameworks_loaded_by(["wtal_tf.features.beam_steps"]) == []


def test_the_extract_driver_imports_without_tensorflow():
  """`python -m wtal_tf.extract` plans, checks the weights and runs the pipeline; only
  its workers extract, so the driver does not pay TensorFlow's import."""
  assert frameworks_loaded_by(["wtal_tf.extract", "wtal_tf.features.weights"]) == []


def test_the_import_check_sees_tensorflow_when_it_is_loaded():
  assert "tensorflow" in frameworks_loaded_by(["wtal_tf.inference.predictor"])


@pytest.mark.parametrize("cls_loss", C.CLS_LOSSES)
def test_predictor_resolves_auto_for_its_model(tmp_path, cls_loss):
  root = write_dataset(tmp_path / "d", {"a": (["A", "B"], 5)}, {"b": (["C"], 4)})
  cfg = tiny_config(root, tmp_path / "m", loss={"cls_loss": cls_loss})
  assert cfg.localize.proposal_source == "auto"
  ds = data.load_dataset(cfg.data)
  predictor = Predictor(training.build_model(cfg, ds), ds.feature_dims, cfg.localize)
  assert predictor.localize_config == cfg.localize.for_model(cls_loss)
  assert predictor.localize_config.proposal_source != "auto"


# Runs in a subprocess: each bench script as `python -m bench.<name> --help`, in turn.
HELP_CHILD = """
import contextlib, io, runpy, sys
for name in sys.argv[1:]:
  sys.argv = [name, "--help"]
  out = io.StringIO()
  try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
      runpy.run_module(name, run_name="__main__", alter_sys=True)
  except SystemExit as e:
    assert e.code == 0 and out.getvalue().strip(), (name, e.code, out.getvalue())
  else:
    raise AssertionError(name + " --help ran without exiting")
"""


def test_every_bench_script_answers_help_without_running():
  """Found by a new user: `python -m bench.bench_two_stream --help` started the benchmark
  (minutes of both cores)."""
  names = sorted(f"bench.{p.stem}" for p in (REPO / "bench").glob("*.py")
                 if "__main__" in p.read_text())
  assert len(names) >= 11
  proc = subprocess.run([sys.executable, "-c", HELP_CHILD, *names], cwd=REPO,
                        capture_output=True, text=True, timeout=180,
                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert proc.returncode == 0, proc.stderr[-3000:]
