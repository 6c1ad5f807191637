"""TV-L1 optical flow for the flow stream, as kinetics-i3d, by one of two engines.

The flow of frame i is TV-L1 (OpenCV contrib `DualTVL1OpticalFlow`, default
parameters) from grayscale frame i to frame i + 1, in pixels, [H, W, 2] with
(dx, dy) channels; values are clipped to [-FLOW_BOUND, FLOW_BOUND] and divided
by FLOW_BOUND, so the stream's input lies in [-1, 1]. A segment of 16 frames
thus has 16 flow fields and needs the frame after it. Only the very last frame
of a video has no successor; it matters only when the video's frame count is a
multiple of 16, and then that frame's flow repeats the flow of the frame
before it. So flow and RGB give the same floor(frames / 16) segments.

Engines (`compute_flow`): "opencv" runs cv2.optflow's solver, one per thread
on every core; "keras" runs the same algorithm as one compiled keras.ops
computation (wtal_tf.features.tvl1; TensorFlow or JAX backend, CPU or GPU).
"""

import concurrent.futures
import os
import threading

import cv2
import numpy as np

from wtal_tf.config import FLOW_ENGINES as ENGINES
from wtal_tf.features import tvl1 as keras_tvl1

FLOW_BOUND = 20.0  # pixels: |flow| is clipped at this before scaling to [-1, 1]
CORES = os.cpu_count() or 1

_LOCAL = threading.local()  # one OpenCV solver per thread (it keeps internal buffers)


def tvl1():
  """A new OpenCV TV-L1 solver with its default parameters."""
  return cv2.optflow.DualTVL1OpticalFlow_create()


def _opencv_pair(pair) -> np.ndarray:
  if not hasattr(_LOCAL, "solver"):
    _LOCAL.solver = tvl1()
  return _LOCAL.solver.calc(pair[0], pair[1], None)


def compute_flow(first, second, engine: str = "opencv") -> np.ndarray:
  """uint8 grayscale [B, H, W] frame pairs -> float32 [B, H, W, 2]: (dx, dy) in pixels
  from first[i] to second[i], by `engine` (ENGINES), using every core."""
  first, second = np.asarray(first), np.asarray(second)
  if first.shape != second.shape or first.ndim != 3 or first.dtype != np.uint8 \
      or second.dtype != np.uint8:
    raise ValueError(f"first and second must be uint8 [B, H, W] of one shape, got "
                     f"{first.dtype}{list(first.shape)} and {second.dtype}{list(second.shape)}")
  if engine not in ENGINES:
    raise ValueError(f"flow engine {engine!r}: choose from {ENGINES}")
  if len(first) == 0:
    return np.zeros(first.shape + (2,), np.float32)
  if engine == "keras":
    return keras_tvl1.tvl1_flow(first, second, pairs_per_call=1, workers=CORES)
  with concurrent.futures.ThreadPoolExecutor(min(CORES, len(first))) as pool:
    return np.stack(list(pool.map(_opencv_pair, zip(first, second)))).astype(np.float32)


def to_unit_range(flow: np.ndarray) -> np.ndarray:
  """Flow in pixels -> clipped to ±FLOW_BOUND and divided by it: float32 in [-1, 1]."""
  return (np.clip(flow, -FLOW_BOUND, FLOW_BOUND) / np.float32(FLOW_BOUND)).astype(np.float32)


def segment_flow(gray: np.ndarray, next_gray: np.ndarray | None,
                 engine: str = "opencv") -> np.ndarray:
  """uint8 [n, H, W] frames (+ the frame after them or None) -> float32 [n, H, W, 2] in [-1, 1].

  Flow i goes from frame i to frame i + 1; without a next frame the last
  flow repeats the one before it.
  """
  frames = np.concatenate([gray, next_gray[None]]) if next_gray is not None else gray
  fields = compute_flow(frames[:-1], frames[1:], engine)
  if next_gray is None:
    fields = np.concatenate([fields, fields[-1:]])
  return to_unit_range(fields)
