"""Extraction on a real distributed engine: Beam's Dask runner against a Dask cluster that
the test starts as separate processes on 127.0.0.1 (a scheduler and two preloaded workers,
as docs/raw_video.md starts them)."""

import contextlib
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import IN_MEMORY, REPO, S3_KEYS
from video_helpers import smooth_frames, write_video
from wtal_tf import contract
from wtal_tf.config import ExtractConfig
from wtal_tf.features import beam_pipeline as pipeline

distributed = pytest.importorskip("distributed")

WORKERS = 2
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
# Both streams at 64 px, two segments a chunk: each work item takes a few tenths of a
# second, as real ones take minutes, so the scheduler has work to hand to both workers.
SMALL = ["--streams=rgb,flow", "--random_init_seed=0", "--resize_shorter=80", "--crop_size=64",
         "--batch_segments=2", "--chunk_segments=2"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
  """The scheduler's address; the processes are stopped after the module's tests."""
  root = tmp_path_factory.mktemp("dask")
  scheduler_file = root / "scheduler.json"
  log = open(root / "cluster.log", "w")  # pylint: disable=consider-using-with
  procs = [subprocess.Popen(
      [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
       "--port", "0", "--no-dashboard", "--scheduler-file", str(scheduler_file)],
      cwd=REPO, env=ENV, stdout=log, stderr=log)]
  address = None
  try:
    deadline = time.time() + START_TIMEOUT_S
    while not scheduler_file.exists() and time.time() < deadline:
      time.sleep(0.2)
    address = json.loads(scheduler_file.read_text())["address"]
    procs += [subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers", "1",
         "--nthreads", "1", "--no-dashboard", "--memory-limit", "4GB",
         "--preload", "wtal_tf.features.dask_preload"],  # as docs/raw_video.md starts them
        cwd=REPO, env=ENV, stdout=log, stderr=log) for _ in range(WORKERS)]
    with distributed.Client(address, timeout=START_TIMEOUT_S) as client:
      client.wait_for_workers(WORKERS, timeout=START_TIMEOUT_S)
    yield address
  finally:
    if address is not None:  # asked to close: about 5 s here, against 10 s on SIGTERM
      with contextlib.suppress(Exception), distributed.Client(
          address, timeout=START_TIMEOUT_S) as client:
        client.shutdown()
    for p in procs:
      try:
        p.wait(timeout=STOP_TIMEOUT_S)
      except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    log.close()


def direct_cfg(videos, out, streams=("rgb", "flow")) -> ExtractConfig:
  """SMALL as a config for the DirectRunner, run here (in_memory)."""
  return ExtractConfig(video_dir=str(videos), output_dir=str(out), streams=streams,
                       random_init_seed=0, resize_shorter=80, crop_size=64, batch_segments=2,
                       chunk_segments=2, pipeline_args=IN_MEMORY)


def extract(videos, out, *beam_args, cwd=REPO):
  proc = subprocess.run([sys.executable, "-m", "wtal_tf.extract", f"--video_dir={videos}",
                         f"--output_dir={out}", *SMALL, *beam_args],
                        cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def test_the_preload_imports_tensorflow_in_the_workers_not_in_their_nannies(cluster):
  """(Before any run: first in this module.) Dask imports a preload module in the
  nanny too; only the worker processes run its dask_setup."""
  def tensorflow_imported():  # defined here: sent by value (those processes cannot import
    return "tensorflow" in sys.modules  # this file)

  with distributed.Client(cluster, timeout=START_TIMEOUT_S) as client:
    workers = client.run(tensorflow_imported)
    nannies = client.run(tensorflow_imported, nanny=True)
  assert len(workers) == len(nannies) == WORKERS
  assert all(workers.values()) and not any(nannies.values())


def test_the_dask_runner_on_a_cluster_equals_the_direct_runner_and_uses_both_workers(
    cluster, tmp_path):
  """Features bit for bit as the DirectRunner's, chunks on both workers; and the
  scheduler, which unpickles the steps to plan the tasks but never runs them, does not
  import TensorFlow (a new cluster's first run would wait for it). --video_dir is given
  relative to the driver's folder, which is not the workers' (found by a user: every
  video failed, "No such file or directory")."""
  videos = tmp_path / "videos"
  videos.mkdir()
  write_video(videos / "long.mp4", smooth_frames(200, 48, 64, seed=1), fps=30,
              codec="libx264", pix_fmt="yuv420p", codec_options={"g": "50", "bf": "3"})
  for k in range(3):
    write_video(videos / f"v{k}.mkv", smooth_frames(40 + 16 * k, 48, 64, seed=5 + k))
  dask = extract("videos", tmp_path / "dask", "--runner=DaskRunner",
                 f"--dask_client_address={cluster}", cwd=tmp_path)
  # The chunks were planned for the cluster's threads, asked of its scheduler.
  assert f"chunks planned for {WORKERS} workers" in dask.stderr
  # The driver counted the progress marks the workers wrote.
  assert "extract test: 4/4 videos done" in dask.stderr
  pipeline.extract(direct_cfg(videos, tmp_path / "direct"))
  names = ["long", "v0", "v1", "v2"]
  workers = set()
  for name in names:
    for stream in ("rgb", "flow"):
      a, b = (np.load(contract.feature_path(str(tmp_path / d), "test", stream, name))
              for d in ("dask", "direct"))
      np.testing.assert_array_equal(a, b)
    record = json.loads((tmp_path / "dask" / "extract_status" / "test" / f"{name}.json")
                        .read_text())
    workers |= set(record["workers"])
  assert len(workers) == WORKERS, workers  # the chunks were spread over both workers
  gt = [json.loads((tmp_path / d / "gt.json").read_text())["database"]
        for d in ("dask", "direct")]
  assert gt[0] == gt[1] and set(gt[0]) == set(names)
  watched = ["keras", "tensorflow", "wtal_tf.features.beam_steps"]

  def imported():  # defined here: sent by value (the scheduler cannot import this file)
    return [m for m in watched if m in sys.modules]

  with distributed.Client(cluster, timeout=START_TIMEOUT_S) as client:
    assert client.run_on_scheduler(imported) == ["wtal_tf.features.beam_steps"]
    # The same check finds TensorFlow where the steps run.
    assert list(client.run(imported).values()) == [watched] * WORKERS


def test_the_dask_runner_writes_into_s3(cluster, tmp_path, s3_server):
  """Dask workers are not given Beam's options by the runner: each step sets its
  filesystems' from the run's arguments (an S3 server over HTTP, see conftest)."""
  endpoint, client = s3_server
  videos = tmp_path / "videos"
  videos.mkdir()
  write_video(videos / "v.mkv", smooth_frames(64, 48, 64, seed=3))
  extract(videos, "s3://wtal/dask-run", "--streams=rgb", "--runner=DaskRunner",
          f"--dask_client_address={cluster}", f"--s3_endpoint_url={endpoint}", *S3_KEYS)
  pipeline.extract(direct_cfg(videos, tmp_path / "direct", streams=("rgb",)))
  got = client.get_object(Bucket="wtal", Key=f"dask-run/{contract.FEATURES_DIR}/test/rgb/v.npy")
  assert got["Body"].read() == pathlib.Path(contract.feature_path(
      str(tmp_path / "direct"), "test", "rgb", "v")).read_bytes()
