"""Extraction on Beam's runners against a plain loop, and one long video split over workers.

  runners  the same videos (default 5 x 80 segments = 400) through (a) a plain loop (one
           Extractor, then .npy writes), (b) beam_pipeline.extract's default DirectRunner
           (multi_processing, one worker per core) and (c) the Dask runner on a local
           cluster of 2 single-thread workers started here (warm: the cluster has run the
           pipeline once before, as a long-lived cluster has); wall time each.
  split    one long video (default 10 min at 25 fps = 15,000 frames) on the Dask cluster
           with 1 worker against 2 workers; every worker (and the TensorFlow in it) uses one
           thread, so 2 workers use the machine's 2 cores. Peak RSS of each worker.

Small frames (120x160, crop 112, RGB, random weights) keep it to minutes on 2 cores.

flock -x /tmp/wtal_heavy.lock .venv/bin/python -m bench.bench_cluster [--part=all]
"""

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import psutil

from bench.bench_extract import long_video, plain_loop, write_videos
from wtal_tf.config import ExtractConfig
from wtal_tf.data import contract
from wtal_tf.features import beam_pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONE_THREAD = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
              "OMP_NUM_THREADS": "1", "OPENCV_FOR_THREADS_NUM": "1"}
GEOMETRY = {"streams": ("rgb",), "random_init_seed": 0, "resize_shorter": 112, "crop_size": 112}
POLL_S = 0.5  # seconds between RSS samples of the workers
STOP_TIMEOUT_S = 20.0  # seconds a cluster process may take to stop before it is killed


@contextlib.contextmanager
def dask_cluster(workers: int, root: str):
  """A scheduler and `workers` single-thread workers on 127.0.0.1; yields (address, pids)."""
  env = {**os.environ, **ONE_THREAD}
  scheduler_file = os.path.join(root, f"scheduler{workers}.json")
  log = open(os.path.join(root, "cluster.log"), "a")  # pylint: disable=consider-using-with
  procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host",
                             "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file",
                             scheduler_file], cwd=REPO, env=env, stdout=log, stderr=log)]
  try:
    while not os.path.exists(scheduler_file):
      time.sleep(0.2)
    with open(scheduler_file, encoding="utf-8") as f:
      address = json.load(f)["address"]
    procs += [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address,
                                "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                                "--no-nanny"], cwd=REPO, env=env, stdout=log, stderr=log)
              for _ in range(workers)]
    import distributed  # pylint: disable=import-outside-toplevel
    with distributed.Client(address, timeout=120) as client:
      client.wait_for_workers(workers, timeout=120)
    yield address, [p.pid for p in procs[1:]]
  finally:
    for p in procs:
      p.terminate()
    for p in procs:
      try:
        p.wait(timeout=STOP_TIMEOUT_S)
      except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    log.close()


def run_extract(videos: str, out: str, *beam_args, **fields) -> float:
  """Wall seconds of beam_pipeline.extract in this process (as bench_extract times it)."""
  shutil.rmtree(out, ignore_errors=True)
  cfg = ExtractConfig(video_dir=videos, output_dir=out, pipeline_args=beam_args, **GEOMETRY,
                      **fields)
  start = time.perf_counter()
  beam_pipeline.extract(cfg)
  return time.perf_counter() - start


def peak_rss(pids, stop: threading.Event, peaks: dict) -> None:
  while not stop.wait(POLL_S):
    for pid in pids:
      with contextlib.suppress(psutil.Error):
        peaks[pid] = max(peaks.get(pid, 0), psutil.Process(pid).memory_info().rss)


def bench_runners(args, root: str) -> dict:
  frames = args.segments_per_video * contract.SEGMENT_FRAMES
  videos = os.path.join(root, "videos")
  paths = write_videos(videos, args.videos, frames, 120, 160)
  cfg = ExtractConfig(output_dir=os.path.join(root, "loop"), **GEOMETRY)
  out = {"runners_segments": args.videos * args.segments_per_video,
         "loop_s": plain_loop(cfg, paths)}
  print(json.dumps(out), flush=True)
  out["direct_s"] = run_extract(videos, os.path.join(root, "direct"))
  print(json.dumps(out), flush=True)
  with dask_cluster(2, root) as (address, _):
    dask = ["--runner=DaskRunner", f"--dask_client_address={address}"]
    out["dask_cold_s"] = run_extract(videos, os.path.join(root, "dask"), *dask)
    out["dask_warm_s"] = run_extract(videos, os.path.join(root, "dask"), *dask)
  for k in ("direct_s", "dask_cold_s", "dask_warm_s"):
    out[k.replace("_s", "_vs_loop")] = out[k] / out["loop_s"]
  return out


def bench_split(args, root: str) -> dict:
  video_dir = os.path.join(root, "long")
  os.makedirs(video_dir, exist_ok=True)
  long_video(os.path.join(video_dir, "long.mkv"), int(args.minutes * 60 * contract.FPS),
             120, 160)
  out = {"split_minutes": args.minutes, "chunk_segments": args.chunk_segments}
  # (workers, segments per chunk): the default chunking on 1 and 2 workers, and the whole
  # video as one work item on 1 worker (what chunking costs).
  for workers, chunk in ((1, args.chunk_segments), (2, args.chunk_segments), (1, 10**6)):
    label = f"split_{workers}_workers" + ("_one_chunk" if chunk == 10**6 else "")
    with dask_cluster(workers, root) as (address, pids):
      stop, peaks = threading.Event(), {}
      watcher = threading.Thread(target=peak_rss, args=(pids, stop, peaks), daemon=True)
      watcher.start()
      out[f"{label}_s"] = run_extract(
          video_dir, os.path.join(root, label), "--runner=DaskRunner",
          f"--dask_client_address={address}", chunk_segments=chunk)
      stop.set()
      watcher.join()
      out[f"{label}_peak_rss_mb"] = [round(v / 2**20) for v in peaks.values()]
      print(json.dumps(out), flush=True)
  out["split_2_vs_1"] = out["split_2_workers_s"] / out["split_1_workers_s"]
  out["chunking_overhead"] = out["split_1_workers_s"] / out["split_1_workers_one_chunk_s"]
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--part", default="all", choices=["all", "runners", "split"])
  parser.add_argument("--videos", type=int, default=5)
  parser.add_argument("--segments_per_video", type=int, default=80)
  parser.add_argument("--minutes", type=float, default=10.0)
  parser.add_argument("--chunk_segments", type=int,
                      default=ExtractConfig.__dataclass_fields__["chunk_segments"].default)
  args = parser.parse_args()
  root = tempfile.mkdtemp(prefix="bench_cluster_")
  results = {"machine": f"{os.cpu_count()} cores"}
  try:
    if args.part in ("all", "runners"):
      results.update(bench_runners(args, root))
      print(json.dumps(results), flush=True)
    if args.part in ("all", "split"):
      results.update(bench_split(args, root))
  finally:
    shutil.rmtree(root, ignore_errors=True)
  print(json.dumps(results, indent=1))


if __name__ == "__main__":
  main()
