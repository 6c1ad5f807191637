"""Detections of many videos as ActivityNet JSON (SPEC §5)."""

import os
from typing import Mapping, Protocol, Sequence

import numpy as np

from wtal_tf import __version__
from wtal_tf import localization
from wtal_tf.config import LocalizeConfig
from wtal_tf.data import Video
from wtal_tf.outputs import StreamOutput


class Predict(Protocol):
  """A model's forward pass with its resolved localization config (inference.Predictor)."""
  streams: Sequence[str]
  localize_config: LocalizeConfig

  def __call__(self, features: dict[str, np.ndarray]) -> Mapping[str, StreamOutput]:
    ...


def video_results(dets: localization.Detections, classes: Sequence[str],
                  seconds_per_segment: float, duration=None) -> list[dict]:
  """One video's detections as ActivityNet result entries, by descending score."""
  start, end = localization.to_seconds(dets, seconds_per_segment, duration)
  order = np.argsort(-dets.scores, kind="stable")
  return [{"label": classes[int(dets.classes[i])], "score": float(dets.scores[i]),
           "segment": [float(start[i]), float(end[i])]} for i in order]


def detect(predict: Predict, videos: Sequence[Video], classes: Sequence[str],
           seconds_per_segment: float, keep_outputs: Sequence[str] = ()):
  """Runs the model and its localization config over `videos`.

  Returns ({video: [results]} with every video a key, {video: outputs} for
  the videos named in keep_outputs).
  """
  results, kept = {}, {}
  for v in videos:
    outputs = predict(v.load(predict.streams))
    dets = localization.localize(outputs, predict.localize_config)
    results[v.name] = video_results(dets, classes, seconds_per_segment, v.duration)
    if v.name in keep_outputs:
      kept[v.name] = (outputs, dets)
  return results, kept


def document(results: dict, external_data: dict | None = None) -> dict:
  return {"version": f"wtal_tf {__version__}", "results": results,
          "external_data": external_data or {}}


def default_path(model_dir: str, subset: str) -> str:
  return os.path.join(model_dir, f"detections_{subset}.json")
