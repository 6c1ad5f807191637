"""ActivityNet detection JSON, in and out (SPEC §5).

In: `parse_detections` validates {"results": {video: [{label, score, segment}]}}
into flat arrays, naming the first bad entry. Out: `document` wraps results
as a file; `video_results` turns one video's detections into entries.
"""

import contextlib
import dataclasses
import gc
import itertools
import math
import operator
import os
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from wtal_tf import __version__
from wtal_tf.errors import UserError
from wtal_tf.localization.detections import Detections, to_seconds


@dataclasses.dataclass(frozen=True)
class Predictions:
  """Flat arrays in the order of the detections file."""
  videos: np.ndarray  # [N] str
  labels: np.ndarray  # [N] str
  scores: np.ndarray  # [N] float64
  starts: np.ndarray  # [N] float64
  ends: np.ndarray  # [N] float64


def parse_detections(obj: dict, source: str) -> Predictions:
  """Validates ActivityNet detections {"results": {video: [...]}} into flat arrays.

  A vectorised fast path handles well-formed input; anything it rejects is
  parsed again entry by entry to name the first bad one.
  """
  results = obj.get("results") if isinstance(obj, dict) else None
  if not isinstance(results, dict):
    raise UserError(f"{source}: no 'results' object (not ActivityNet detections)")
  try:
    with _gc_paused():
      return _parse_fast(results)
  except (KeyError, TypeError, ValueError, AttributeError):
    return _parse_checked(results, source)


@contextlib.contextmanager
def _gc_paused():
  """Pauses the cyclic garbage collector while building many small tuples.

  The tuples cannot form cycles, yet their allocation triggers collections
  that traverse every live object: with TensorFlow imported, parsing 50,000
  detections took 0.23 s with the collector on and 0.05 s with it paused.
  """
  enabled = gc.isenabled()
  gc.disable()
  try:
    yield
  finally:
    if enabled:
      gc.enable()


_FIELDS = operator.itemgetter("label", "score", "segment")


def _parse_fast(results: dict) -> Predictions:
  if not all(type(dets) is list for dets in results.values()):
    raise TypeError("results must be lists")
  entries = list(map(_FIELDS, itertools.chain.from_iterable(results.values())))
  videos = np.repeat(np.asarray(list(results), dtype=object),
                     [len(dets) for dets in results.values()])
  if not entries:
    empty = np.zeros(0, np.float64)
    return Predictions(videos, np.zeros(0, object), empty, empty, empty)
  labels, scores, segments = zip(*entries)
  labels = np.asarray(labels, dtype=object)
  if not all(isinstance(l, str) for l in pd.unique(labels)):
    raise TypeError("labels must be strings")
  if not set(map(type, segments)) <= {list, tuple} or set(map(len, segments)) != {2}:
    raise ValueError("segments must be pairs")
  starts, ends = (np.asarray(b, np.float64) for b in zip(*segments))
  scores = np.asarray(scores, np.float64)
  if not (np.isfinite(scores).all() and np.isfinite(starts).all() and np.isfinite(ends).all()):
    raise ValueError("non-finite")
  if (ends < starts).any():
    raise ValueError("reversed")
  return Predictions(videos, labels, scores, starts, ends)


def _parse_checked(results: dict, source: str) -> Predictions:
  videos, labels, scores, starts, ends = [], [], [], [], []
  for video, dets in results.items():
    if not isinstance(dets, list):
      raise UserError(f"{source}: results for video {video!r} must be a list")
    for k, d in enumerate(dets):
      where = f"{source}: video {video!r} detection {k}"
      if not isinstance(d, dict) or not {"label", "score", "segment"} <= set(d):
        raise UserError(f"{where}: needs 'label', 'score' and 'segment'")
      seg = d["segment"]
      if not isinstance(seg, (list, tuple)) or len(seg) != 2:
        raise UserError(f"{where}: segment must be [start, end], got {seg!r}")
      try:
        s, e, sc = float(seg[0]), float(seg[1]), float(d["score"])
      except (TypeError, ValueError):
        raise UserError(f"{where}: segment and score must be numbers") from None
      if not all(map(math.isfinite, (s, e, sc))):
        raise UserError(f"{where}: non-finite segment or score")
      if e < s:  # (its tIoU with anything would be a negative union's)
        raise UserError(f"{where}: reversed segment {[s, e]} (end before start)")
      videos.append(video)
      labels.append(str(d["label"]))
      scores.append(sc)
      starts.append(s)
      ends.append(e)
  return Predictions(np.asarray(videos, dtype=object), np.asarray(labels, dtype=object),
                     np.asarray(scores, np.float64), np.asarray(starts, np.float64),
                     np.asarray(ends, np.float64))


def video_results(dets: Detections, classes: Sequence[str],
                  seconds_per_segment: float, duration: Optional[float] = None) -> list[dict]:
  """One video's detections as ActivityNet result entries, by descending score; those that
  begin at or after the video's end (`duration`) are left out."""
  start, end = to_seconds(dets, seconds_per_segment, duration)
  order = np.argsort(-dets.scores, kind="stable")
  return [{"label": classes[int(dets.classes[i])], "score": float(dets.scores[i]),
           "segment": [float(start[i]), float(end[i])]} for i in order if end[i] > start[i]]


def document(results: dict, external_data: dict | None = None) -> dict:
  """An ActivityNet detections file's content."""
  return {"version": f"wtal_tf {__version__}", "results": results,
          "external_data": external_data or {}}


def default_path(model_dir: str, subset: str) -> str:
  """MODEL_DIR/detections_<subset>.json: localize's detections of a subset."""
  return os.path.join(model_dir, f"detections_{subset}.json")


def default_video_path(model_dir: str, video: str) -> str:
  """MODEL_DIR/detect_<video>.json: detect's detections of one video (not named as a
  subset's: a video named `test` would replace localize's detections of the test set)."""
  return os.path.join(model_dir, f"detect_{video}.json")


def results_path(detections_path: str) -> str:
  """Where the numbers of an evaluation go: next to the detections."""
  root, _ = os.path.splitext(detections_path)
  return root + ".eval.json"
