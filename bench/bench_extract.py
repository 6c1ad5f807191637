"""Raw-video extraction: TV-L1 speed, the Beam pipeline against a plain loop, peak memory.

  tvl1      TV-L1 flow fields per second at 224x224 (grayscale uint8, a smooth texture
            translating 2 px a frame).
  pipeline  the same videos through (a) a plain loop (one Extractor, then .npy writes),
            (b) wtal_tf.features.beam_pipeline.extract with the DirectRunner in
            multi_processing mode (one worker process per core) and (c) in_memory;
            wall time each, including building the encoder. (The default mode, worker
            threads, is timed by bench_cluster --part=runners.)
  memory    peak RSS of extracting one long video (default 10 min at 25 fps =
            15,000 frames) against a 1-minute one, each in a fresh process.

flock -x /tmp/wtal_heavy.lock .venv/bin/python -m bench.bench_extract [--part=all]
"""

import argparse
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench.loop import plain_loop
from bench.videos import long_video
from wtal_tf.config import ExtractConfig
from wtal_tf import contract
from wtal_tf.features import beam_pipeline as pipeline
from wtal_tf.features import extraction, flow, preprocess, video

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))
from video_helpers import smooth_frames, write_video  # pylint: disable=wrong-import-position

CROP = ExtractConfig().crop_size  # pixels, kinetics-i3d's input side


def bench_tvl1(num_fields: int) -> dict:
  frames = smooth_frames(num_fields + 1, CROP, CROP, shift=2)
  gray = preprocess.gray(frames, CROP, CROP)
  flow.compute_flow(gray[:1], gray[1:2])  # warm-up
  start = time.perf_counter()
  flow.segment_flow(gray[:-1], gray[-1])
  seconds = time.perf_counter() - start
  return {"tvl1_fields": num_fields, "tvl1_seconds": seconds,
          "tvl1_fields_per_s": num_fields / seconds}


def write_videos(directory: str, count: int, frames: int, height: int, width: int) -> list:
  os.makedirs(directory, exist_ok=True)
  return [write_video(os.path.join(directory, f"v{k}.mkv"),
                      smooth_frames(frames, height, width, seed=k)) for k in range(count)]


def check_same_features(loop_out: str, out: str, names) -> None:
  """The RGB features under `out` equal the loop's under `loop_out`, bit for bit."""
  for name in names:
    a, b = (np.load(contract.feature_path(o, "test", "rgb", name)) for o in (loop_out, out))
    if not np.array_equal(a, b):
      raise AssertionError(f"{out}: the features of {name} differ from the loop's")


def bench_pipeline(args) -> dict:
  root = tempfile.mkdtemp(prefix="bench_extract_")
  try:
    paths = write_videos(os.path.join(root, "videos"), args.videos, args.frames, 240, 320)
    base = ExtractConfig(video_dir=os.path.join(root, "videos"), streams=("rgb",),
                         random_init_seed=None)
    out = {"videos": args.videos, "frames_per_video": args.frames, "frame_size": "240x320",
           "streams": "rgb (Kinetics-400 weights)"}
    loop_cfg = dataclasses.replace(base, output_dir=os.path.join(root, "loop"))
    out["plain_loop_s"] = plain_loop(loop_cfg, paths)
    for mode in ("multi_processing", "in_memory"):
      cfg = dataclasses.replace(base, output_dir=os.path.join(root, mode),
                                pipeline_args=(f"--direct_running_mode={mode}",))
      start = time.perf_counter()
      pipeline.extract(cfg)
      out[f"beam_{mode}_s"] = time.perf_counter() - start
      check_same_features(loop_cfg.output_dir, cfg.output_dir, [video.name(p) for p in paths])
    for mode in ("multi_processing", "in_memory"):
      out[f"beam_{mode}_over_loop"] = out[f"beam_{mode}_s"] / out["plain_loop_s"]
    return out
  finally:
    shutil.rmtree(root, ignore_errors=True)


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def memory_child(path: str, shorter: int, crop: int) -> None:
  """Run in a fresh process: extract `path`, print peak RSS before and after."""
  cfg = ExtractConfig(streams=("rgb",), resize_shorter=shorter, crop_size=crop,
                      random_init_seed=0)
  extractor = extraction.Extractor(cfg)
  extractor(write_video(os.path.join(os.path.dirname(path), "warm.mkv"),
                        smooth_frames(32, 48, 64)))  # trace once
  rss_ready = peak_rss_mb()
  start = time.perf_counter()
  result = extractor(path)
  print(json.dumps({"frames": result.num_frames, "segments": len(result.features["rgb"]),
                    "seconds": time.perf_counter() - start, "peak_rss_ready_mb": rss_ready,
                    "peak_rss_mb": peak_rss_mb()}))


def bench_memory(args) -> dict:
  root = tempfile.mkdtemp(prefix="bench_extract_mem_")
  out = {"memory_frame_size": f"{args.mem_height}x{args.mem_width}",
         "memory_geometry": f"shorter {args.mem_shorter}, crop {args.mem_crop}"}
  try:
    for label, minutes in (("1min", 1), ("long", args.minutes)):
      frames = int(minutes * 60 * video.TARGET_FPS)
      path = long_video(os.path.join(root, f"{label}.mkv"), frames, args.mem_height,
                        args.mem_width)
      proc = subprocess.run([sys.executable, "-m", "bench.bench_extract", "--part=memory_child",
                             f"--child_video={path}", f"--mem_shorter={args.mem_shorter}",
                             f"--mem_crop={args.mem_crop}"], capture_output=True, text=True,
                            check=True)
      out[f"memory_{label}"] = json.loads(proc.stdout.strip().splitlines()[-1])
      out[f"memory_{label}"]["minutes"] = minutes
    return out
  finally:
    shutil.rmtree(root, ignore_errors=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--part", default="all",
                      choices=["all", "tvl1", "pipeline", "memory", "memory_child"])
  parser.add_argument("--tvl1_fields", type=int, default=32)
  parser.add_argument("--videos", type=int, default=4, help="pipeline: videos")
  parser.add_argument("--frames", type=int, default=80, help="pipeline: frames per video")
  parser.add_argument("--minutes", type=float, default=10.0, help="memory: long video")
  parser.add_argument("--mem_height", type=int, default=120)
  parser.add_argument("--mem_width", type=int, default=160)
  parser.add_argument("--mem_shorter", type=int, default=112)
  parser.add_argument("--mem_crop", type=int, default=112)
  parser.add_argument("--child_video", default="")
  args = parser.parse_args()
  if args.part == "memory_child":
    memory_child(args.child_video, args.mem_shorter, args.mem_crop)
    return
  results = {"machine": f"{os.cpu_count()} cores", "python": sys.version.split()[0]}
  if args.part in ("all", "tvl1"):
    results.update(bench_tvl1(args.tvl1_fields))
    print(json.dumps(results), flush=True)
  if args.part in ("all", "pipeline"):
    results.update(bench_pipeline(args))
    print(json.dumps(results), flush=True)
  if args.part in ("all", "memory"):
    results.update(bench_memory(args))
  print(json.dumps(results, indent=1))


if __name__ == "__main__":
  main()
