"""Flow on the 224 crop (wtal_tf, as kinetics-i3d) against flow on the whole frame resized to
a 256 shorter side, then cropped (denseflow-based pipelines, e.g. mmaction2's
build_rawframes.py --new-short 256): mean end-point error inside the crop, and the cost.

Real consecutive frames of ../shared/videos (cricket.mp4, bikes.mp4), OpenCV's TV-L1.

flock -x /tmp/wtal_heavy.lock .venv/bin/python -m bench.bench_flow_crop [--pairs=6]
"""

import argparse
import json
import os
import time

import cv2
import numpy as np

from wtal_tf.features import flow
from wtal_tf.features import preprocess
from wtal_tf.features import video

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
                      "shared", "videos")
SHORTER, CROP = 256, 224  # pixels (the extraction defaults)


def whole_gray(frame: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
  """One frame resized to out_h x out_w as preprocess resizes before cropping, in grayscale
  (BT.601 luma rounded to uint8, as preprocess.gray)."""
  resized = cv2.resize(frame.astype(np.float32), (out_w, out_h), interpolation=cv2.INTER_LINEAR)
  return np.clip(np.rint(cv2.cvtColor(resized, cv2.COLOR_RGB2GRAY)), 0, 255).astype(np.uint8)


def timed_flow(gray: np.ndarray) -> tuple[np.ndarray, float]:
  start = time.perf_counter()
  fields = flow.compute_flow(gray[:-1], gray[1:])
  return fields, (time.perf_counter() - start) / (len(gray) - 1)


def measure(path: str, pairs: int) -> dict:
  frames = np.stack([f for _, f in zip(range(pairs + 1), video.frames(path))])
  h, w = frames.shape[1:3]
  out_h, out_w = preprocess.resized_shape(h, w, SHORTER)
  top, left = (out_h - CROP) // 2, (out_w - CROP) // 2
  on_crop, crop_s = timed_flow(preprocess.gray(frames, SHORTER, CROP))
  on_whole, whole_s = timed_flow(np.stack([whole_gray(f, out_h, out_w) for f in frames]))
  whole_gray_crop = np.stack([whole_gray(f, out_h, out_w) for f in frames[:1]])[
      0, top:top + CROP, left:left + CROP]
  assert np.array_equal(whole_gray_crop, preprocess.gray(frames[:1], SHORTER, CROP)[0])
  epe = np.linalg.norm(on_crop - on_whole[:, top:top + CROP, left:left + CROP], axis=-1)
  return {"video": os.path.basename(path), "pairs": pairs, "whole_frame": f"{out_h}x{out_w}",
          "mean_epe_px": float(epe.mean()), "p99_epe_px": float(np.percentile(epe, 99)),
          "mean_epe_px_8px_inside": float(epe[:, 8:-8, 8:-8].mean()),
          "crop_s_per_field": crop_s, "whole_s_per_field": whole_s}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--pairs", type=int, default=6)
  args = parser.parse_args()
  rows = [measure(os.path.join(SHARED, name), args.pairs) for name in ("cricket.mp4", "bikes.mp4")]
  print(json.dumps(rows, indent=1))


if __name__ == "__main__":
  main()
