"""TV-L1 optical flow for the flow stream, as kinetics-i3d.

The flow of frame i is TV-L1 (OpenCV contrib `DualTVL1OpticalFlow`, default
parameters) from grayscale frame i to frame i + 1, in pixels, [H, W, 2] with
(dx, dy) channels; values are clipped to [-FLOW_BOUND, FLOW_BOUND] and divided
by FLOW_BOUND, so the stream's input lies in [-1, 1]. A segment of 16 frames
thus has 16 flow fields and needs the frame after it. Only the very last frame
of a video has no successor; it matters only when the video's frame count is a
multiple of 16, and then that frame's flow repeats the flow of the frame
before it. So flow and RGB give the same floor(frames / 16) segments.
"""

import cv2
import numpy as np

FLOW_BOUND = 20.0  # pixels: |flow| is clipped at this before scaling to [-1, 1]


def tvl1():
  """A TV-L1 solver (one per worker thread; it keeps internal buffers)."""
  return cv2.optflow.DualTVL1OpticalFlow_create()


def to_unit_range(flow: np.ndarray) -> np.ndarray:
  """Flow in pixels -> clipped to ±FLOW_BOUND and divided by it: float32 in [-1, 1]."""
  return (np.clip(flow, -FLOW_BOUND, FLOW_BOUND) / np.float32(FLOW_BOUND)).astype(np.float32)


def segment_flow(solver, gray: np.ndarray, next_gray: np.ndarray | None) -> np.ndarray:
  """uint8 [n, H, W] frames (+ the frame after them or None) -> float32 [n, H, W, 2] in [-1, 1].

  Flow i goes from frame i to frame i + 1; without a next frame the last
  flow repeats the one before it.
  """
  frames = list(gray) + ([next_gray] if next_gray is not None else [])
  fields = [solver.calc(frames[i], frames[i + 1], None) for i in range(len(frames) - 1)]
  if next_gray is None:
    fields.append(fields[-1])
  return to_unit_range(np.stack(fields))
