"""Detections of one video, and the steps both proposal methods take to make them:
the classes to localize, runs of a thresholded signal, and times in seconds.

Everything here is numpy on the host: a handful of array operations per video.
"""

import dataclasses
from typing import Optional

import numpy as np


@dataclasses.dataclass(frozen=True)
class Detections:
  """Detections of one video, in segment units: each covers [start, end + 1).

  Integers (inclusive [start, end]) for the attention and T-CAM proposals;
  fractional for STPN's proposals, which come from upsampled signals.
  """
  classes: np.ndarray  # [N] int, 0-based foreground class index
  starts: np.ndarray  # [N] int, or float for STPN proposals
  ends: np.ndarray  # [N] inclusive: the detection ends at end + 1 segments
  scores: np.ndarray  # [N] float

  def __len__(self):
    return len(self.scores)


def select_classes(probs: np.ndarray, threshold: float) -> np.ndarray:
  """Foreground classes with p >= threshold; else the single most probable one."""
  kept = np.flatnonzero(probs >= threshold)
  return kept if len(kept) else np.array([int(np.argmax(probs))])


def true_runs(mask: np.ndarray):
  """Maximal runs of True along the last axis of mask [R, T].

  Returns (rows, starts, ends): arrays over all runs, ends inclusive.
  """
  num_rows, t = mask.shape
  padded = np.zeros((num_rows, t + 2), np.int8)
  padded[:, 1:-1] = mask
  step = np.diff(padded, axis=1)  # +1 at a run's start, -1 one past its end
  rows, starts = np.nonzero(step == 1)
  _, stops = np.nonzero(step == -1)
  return rows, starts, stops - 1


def to_seconds(dets: Detections, seconds_per_segment: float,
               duration: Optional[float] = None) -> tuple[np.ndarray, np.ndarray]:
  """start = t_s·F/fps, end = (t_e+1)·F/fps, clipped to the duration when known."""
  start = dets.starts * seconds_per_segment
  end = (dets.ends + 1) * seconds_per_segment
  if duration is not None:
    start, end = np.minimum(start, duration), np.minimum(end, duration)
  return start, end
