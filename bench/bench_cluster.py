"""Extraction on Beam's runners against a plain loop, and one long video split over workers.

  runners  the same videos (default 5 x 80 segments = 400) through (a) a plain loop (one
           Extractor, then .npy writes), (b) beam_pipeline.extract's default DirectRunner
           (multi_threading, one worker thread per core), (c) the DirectRunner in
           multi_processing mode (one worker process per core) and (d) the Dask runner on
           a local cluster of 2 single-thread workers started here: cold (plain `dask
           scheduler` and `dask worker`, first run), preloaded (the workers started with
           `--preload wtal_tf.features.dask_preload` as docs/raw_video.md starts them, the
           scheduler needing none; first run) and warm (the preloaded cluster's second
           run); wall time each. Every run's features must equal the loop's bit for bit.
  split    one long video (default 10 min at 25 fps = 15,000 frames, H.264 with a key
           frame every 250 frames, B-frames) on Dask clusters of 1 and of 2 preloaded
           workers for each chunk size in --chunk_sizes, as one work item on 1 worker (what
           chunking costs), and on cold clusters at the default chunk size; every worker
           (and the TensorFlow in it) uses one thread, so 2 workers use the machine's 2
           cores. Peak RSS of each worker.
  pairs    the long video on 1 then 2 preloaded workers at --chunk_segments, --pairs times
           in turn; the 2/1 ratio pair by pair.
  commands the runners' videos through the plain loop (`python -m bench.loop`) and
           through `python -m wtal_tf.extract` (the default DirectRunner), the same flags
           to both, as whole commands, each paying its own imports as a user's `time`
           shows them; --pairs pairs, the first command alternating; the ratio pair by
           pair.
  scaling  the same extraction (a 3-minute video) in one single-thread process alone, then
           in two at once: the floor of the split's 2-worker/1-worker ratio on this machine.
  --geometry (runners, split, pairs, scaling, commands): small = 120x160 videos, crop
           112, RGB, random weights (minutes on 2 cores); default = 240x320 videos,
           wtal_tf's default geometry (256 -> 224) and the Kinetics-400 RGB weights.

flock -x /tmp/wtal_heavy.lock .venv/bin/python -m bench.bench_cluster [--part=all]
"""

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import psutil

from bench.bench_extract import check_same_features, write_videos
from bench.loop import plain_loop
from bench.videos import LONG_GOP, long_h264
from wtal_tf.config import ExtractConfig
from wtal_tf import contract
from wtal_tf.features import beam_pipeline
from wtal_tf.features import extraction
from wtal_tf.features import video

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONE_THREAD = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
              "OMP_NUM_THREADS": "1", "OPENCV_FOR_THREADS_NUM": "1"}
GEOMETRY = {"streams": ("rgb",), "random_init_seed": 0, "resize_shorter": 112, "crop_size": 112}
GEOMETRIES = {  # --geometry: (video height, width), ExtractConfig fields
    "small": ((120, 160), GEOMETRY),
    "default": ((240, 320), {"streams": ("rgb",), "random_init_seed": None}),
}
PRELOAD = "wtal_tf.features.dask_preload"
ONE_CHUNK = 10**6  # segments per chunk: the whole video as one work item
POLL_S = 0.5  # seconds between RSS samples of the workers
STOP_TIMEOUT_S = 20.0  # seconds a cluster process may take to stop before it is killed
START_TIMEOUT_S = 120.0  # seconds the cluster may take to start (scheduler, workers joined)
START_POLL_S = 0.2  # seconds between looks for the scheduler's address file


@contextlib.contextmanager
def dask_cluster(workers: int, root: str, preload: bool = True):
  """A scheduler and `workers` single-thread workers on 127.0.0.1, the workers started with
  --preload PRELOAD unless preload is False; yields (address, worker pids)."""
  env = {**os.environ, **ONE_THREAD}
  scheduler_file = os.path.join(root, f"scheduler{workers}.json")
  log = open(os.path.join(root, "cluster.log"), "a")  # pylint: disable=consider-using-with
  preloads = ["--preload", PRELOAD] if preload else []
  procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host",
                             "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file",
                             scheduler_file], cwd=REPO, env=env, stdout=log,
                            stderr=log)]
  try:
    address, deadline = None, time.time() + START_TIMEOUT_S
    while address is None:  # the file may exist before the scheduler has written it
      if procs[0].poll() is not None or time.time() > deadline:
        raise RuntimeError(f"the Dask scheduler did not start (see {log.name})")
      time.sleep(START_POLL_S)
      with contextlib.suppress(OSError, ValueError, KeyError):
        with open(scheduler_file, encoding="utf-8") as f:
          address = json.load(f)["address"]
    procs += [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address,
                                "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                                "--no-nanny", *preloads],
                               cwd=REPO, env=env, stdout=log, stderr=log)
              for _ in range(workers)]
    import distributed  # pylint: disable=import-outside-toplevel
    with distributed.Client(address, timeout=START_TIMEOUT_S) as client:
      client.wait_for_workers(workers, timeout=START_TIMEOUT_S)
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


def run_extract(videos: str, out: str, *beam_args, geometry=GEOMETRY, **fields) -> float:
  """Wall seconds of beam_pipeline.extract in this process (as bench_extract times it)."""
  shutil.rmtree(out, ignore_errors=True)
  cfg = ExtractConfig(video_dir=videos, output_dir=out, pipeline_args=beam_args, **geometry,
                      **fields)
  start = time.perf_counter()
  beam_pipeline.extract(cfg)
  return time.perf_counter() - start


def peak_rss(pids, stop: threading.Event, peaks: dict) -> None:
  while not stop.wait(POLL_S):
    for pid in pids:
      with contextlib.suppress(psutil.Error):
        peaks[pid] = max(peaks.get(pid, 0), psutil.Process(pid).memory_info().rss)


def long_video_dir(args, root: str) -> str:
  """root/long holding the --minutes long H.264 video (encoded once per bench run)."""
  video_dir = os.path.join(root, "long")
  path = os.path.join(video_dir, "long.mp4")
  if not os.path.exists(path):
    os.makedirs(video_dir, exist_ok=True)
    (height, width), _ = GEOMETRIES[args.geometry]
    long_h264(path, int(args.minutes * 60 * contract.FPS), height, width)
  return video_dir


def dask_args(address: str) -> list[str]:
  return ["--runner=DaskRunner", f"--dask_client_address={address}"]


def runners_videos(args, root: str) -> list[str]:
  """root/videos: --videos videos of --segments_per_video segments at --geometry's size."""
  (height, width), _ = GEOMETRIES[args.geometry]
  frames = args.segments_per_video * contract.SEGMENT_FRAMES
  return write_videos(os.path.join(root, "videos"), args.videos, frames, height, width)


def bench_runners(args, root: str) -> dict:
  geometry = GEOMETRIES[args.geometry][1]
  paths = runners_videos(args, root)
  videos, names = os.path.dirname(paths[0]), [video.name(p) for p in paths]
  loop_out = os.path.join(root, "loop")
  out = {"runners_segments": args.videos * args.segments_per_video,
         "runners_geometry": args.geometry,
         "loop_s": plain_loop(ExtractConfig(output_dir=loop_out, **geometry), paths)}

  def timed(label, where, *beam_args):
    out[label] = run_extract(videos, os.path.join(root, where), *beam_args, geometry=geometry)
    check_same_features(loop_out, os.path.join(root, where), names)
    print(json.dumps(out), flush=True)

  print(json.dumps(out), flush=True)
  timed("direct_s", "direct")
  timed("direct_processes_s", "direct", "--direct_running_mode=multi_processing")
  with dask_cluster(2, root, preload=False) as (address, _):
    timed("dask_cold_s", "dask", *dask_args(address))
  with dask_cluster(2, root) as (address, _):
    for label in ("dask_preloaded_s", "dask_warm_s"):
      timed(label, "dask", *dask_args(address))
  for k in ("direct_s", "direct_processes_s", "dask_cold_s", "dask_preloaded_s", "dask_warm_s"):
    out[k.replace("_s", "_vs_loop")] = out[k] / out["loop_s"]
  return out


def timed_split(video_dir: str, root: str, label: str, workers: int, chunk: int,
                preload: bool = True, geometry=GEOMETRY) -> dict:
  """{label_s, label_peak_rss_mb}: the long video on a fresh cluster of `workers`."""
  with dask_cluster(workers, root, preload) as (address, pids):
    stop, peaks = threading.Event(), {}
    watcher = threading.Thread(target=peak_rss, args=(pids, stop, peaks), daemon=True)
    watcher.start()
    seconds = run_extract(video_dir, os.path.join(root, label), *dask_args(address),
                          geometry=geometry, chunk_segments=chunk)
    stop.set()
    watcher.join()
  return {f"{label}_s": seconds, f"{label}_peak_rss_mb": [round(v / 2**20)
                                                          for v in peaks.values()]}


def bench_split(args, root: str) -> dict:
  video_dir = long_video_dir(args, root)
  out = {"split_minutes": args.minutes, "split_geometry": args.geometry,
         "long_video": f"H.264, key frame every {LONG_GOP}"}
  runs = [(f"split_{w}_workers_chunk_{c}", w, c, True)
          for c in args.chunk_sizes for w in (1, 2)]
  runs += [("split_1_workers_one_chunk", 1, ONE_CHUNK, True)]
  runs += [(f"split_{w}_workers_chunk_{args.chunk_segments}_cold", w, args.chunk_segments,
            False) for w in (1, 2)]
  for label, workers, chunk, preload in runs:
    out.update(timed_split(video_dir, root, label, workers, chunk, preload,
                           GEOMETRIES[args.geometry][1]))
    print(json.dumps(out), flush=True)
  one = out["split_1_workers_one_chunk_s"]
  for c in args.chunk_sizes:
    out[f"chunk_{c}_2_vs_1"] = (out[f"split_2_workers_chunk_{c}_s"]
                                / out[f"split_1_workers_chunk_{c}_s"])
    out[f"chunk_{c}_2_vs_one_chunk"] = out[f"split_2_workers_chunk_{c}_s"] / one
    out[f"chunk_{c}_overhead"] = out[f"split_1_workers_chunk_{c}_s"] / one
  cold = f"split_%d_workers_chunk_{args.chunk_segments}_cold_s"
  out["cold_2_vs_1"] = out[cold % 2] / out[cold % 1]
  return out


def bench_pairs(args, root: str) -> dict:
  """The long video on 1 then 2 preloaded workers at --chunk_segments, --pairs times in
  turn; the 2/1 ratio pair by pair (pairing keeps it meaningful if the machine drifts)."""
  video_dir = long_video_dir(args, root)
  times = {1: [], 2: []}
  for _ in range(args.pairs):
    for workers in (1, 2):
      label = f"pair_{workers}"
      times[workers].append(timed_split(video_dir, root, label, workers, args.chunk_segments,
                                        geometry=GEOMETRIES[args.geometry][1])[f"{label}_s"])
    print(json.dumps(times), flush=True)
  ratios = sorted(b / a for a, b in zip(times[1], times[2]))
  return {"pairs_chunk_segments": args.chunk_segments, "pairs_geometry": args.geometry,
          "pairs_1_worker_s": times[1],
          "pairs_2_workers_s": times[2], "pairs_2_vs_1": ratios,
          "pairs_2_vs_1_median": statistics.median(ratios)}


def geometry_flags(geometry: dict) -> list[str]:
  """ExtractConfig fields -> the extract command's flags (None: the flag's default)."""
  return [f"--{k}={','.join(v) if isinstance(v, tuple) else v}"
          for k, v in geometry.items() if v is not None]


def bench_commands(args, root: str) -> dict:
  """The plain loop and the extract command as whole processes, --pairs pairs."""
  paths = runners_videos(args, root)
  out = os.path.join(root, "out")
  flags = [f"--video_dir={os.path.dirname(paths[0])}", f"--output_dir={out}",
           *geometry_flags(GEOMETRIES[args.geometry][1])]
  commands = {"loop": [sys.executable, "-m", "bench.loop", *flags],
              "extract": [sys.executable, "-m", "wtal_tf.extract", *flags]}
  times = {k: [] for k in commands}
  for k in range(args.pairs):
    for label in sorted(commands, reverse=k % 2 == 1):  # the loop first in every other pair
      shutil.rmtree(out, ignore_errors=True)
      start = time.perf_counter()
      proc = subprocess.run(commands[label], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, check=False)
      times[label].append(time.perf_counter() - start)
      if proc.returncode:
        raise RuntimeError(f"{' '.join(commands[label])} failed:\n{proc.stderr[-3000:]}")
    print(json.dumps(times), flush=True)
  ratios = [b / a for a, b in zip(times["loop"], times["extract"])]
  return {"commands_segments": args.videos * args.segments_per_video,
          "commands_geometry": args.geometry, "commands_loop_s": times["loop"],
          "commands_extract_s": times["extract"], "commands_extract_vs_loop": ratios,
          "commands_extract_vs_loop_median": statistics.median(ratios)}


def loop_seconds(video_path: str, geometry: str) -> float:
  """Seconds of one Extractor over the video in this process (after its build)."""
  extractor = extraction.Extractor(ExtractConfig(**GEOMETRIES[geometry][1]))
  start = time.perf_counter()
  extractor(video_path)
  return time.perf_counter() - start


def bench_scaling(args, root: str) -> dict:
  """What two single-thread processes get from the machine's 2 cores: the same extraction
  in one process alone, then in two at once (timed inside each, after its imports and I3D
  build). The floor of the split's 2-worker/1-worker ratio is together / (2 x alone)."""
  (height, width), _ = GEOMETRIES[args.geometry]
  path = long_h264(os.path.join(root, "scaling.mp4"), int(args.scaling_minutes * 60
                                                          * contract.FPS), height, width)
  command = [sys.executable, "-m", "bench.bench_cluster", "--part=loop", f"--video={path}",
             f"--geometry={args.geometry}"]
  env = {**os.environ, **ONE_THREAD}

  def run(copies: int) -> list[float]:
    procs = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for _ in range(copies)]
    return [float(p.communicate()[0].split()[-1]) for p in procs]

  alone, together = run(1), run(2)
  return {"scaling_minutes": args.scaling_minutes, "scaling_geometry": args.geometry,
          "scaling_alone_s": alone,
          "scaling_together_s": together,
          "scaling_floor_2_vs_1": max(together) / (2 * alone[0])}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--part", default="all", choices=["all", "runners", "split", "scaling",
                                                       "pairs", "commands", "loop"])
  parser.add_argument("--pairs", type=int, default=3,
                      help="--part=pairs: 1/2-worker pairs; --part=commands: loop/extract pairs")
  parser.add_argument("--video", help="--part=loop: the video one process extracts")
  parser.add_argument("--scaling_minutes", type=float, default=3.0)
  parser.add_argument("--videos", type=int, default=5)
  parser.add_argument("--segments_per_video", type=int, default=80)
  parser.add_argument("--minutes", type=float, default=10.0)
  parser.add_argument("--geometry", default="small", choices=sorted(GEOMETRIES))
  parser.add_argument("--chunk_segments", type=int,
                      default=ExtractConfig.__dataclass_fields__["chunk_segments"].default,
                      help="the chunk size of the cold split runs and of --part=pairs")
  parser.add_argument("--chunk_sizes", type=lambda v: [int(x) for x in v.split(",")],
                      default=[16, 32, 64, 128], help="chunk sizes of the preloaded split runs")
  args = parser.parse_args()
  if args.part == "loop":  # one process of --part=scaling
    print(loop_seconds(args.video, args.geometry))
    return
  root = tempfile.mkdtemp(prefix="bench_cluster_")
  results = {"machine": f"{os.cpu_count()} cores"}
  try:
    if args.part in ("all", "runners"):
      results.update(bench_runners(args, root))
      print(json.dumps(results), flush=True)
    if args.part in ("all", "split"):
      results.update(bench_split(args, root))
    if args.part in ("all", "pairs"):
      results.update(bench_pairs(args, root))
    if args.part in ("all", "scaling"):
      results.update(bench_scaling(args, root))
    if args.part in ("all", "commands"):
      results.update(bench_commands(args, root))
  finally:
    shutil.rmtree(root, ignore_errors=True)
  print(json.dumps(results, indent=1))


if __name__ == "__main__":
  main()
