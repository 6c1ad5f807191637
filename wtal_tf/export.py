"""Detections of many videos as ActivityNet JSON (SPEC §5)."""

import os
from typing import Callable, Mapping, Sequence

import numpy as np

from wtal_tf import __version__
from wtal_tf import checkpointing
from wtal_tf import data
from wtal_tf import io_utils
from wtal_tf import localization
from wtal_tf.config import Config, LocalizeConfig
from wtal_tf.data import Video
from wtal_tf.errors import UserError
from wtal_tf.inference import Predictor, StreamOutput

Predict = Callable[[dict[str, np.ndarray]], Mapping[str, StreamOutput]]


def video_results(dets: localization.Detections, classes: Sequence[str],
                  seconds_per_segment: float, duration=None) -> list[dict]:
  """One video's detections as ActivityNet result entries, by descending score."""
  start, end = localization.to_seconds(dets, seconds_per_segment, duration)
  order = np.argsort(-dets.scores, kind="stable")
  return [{"label": classes[int(dets.classes[i])], "score": float(dets.scores[i]),
           "segment": [float(start[i]), float(end[i])]} for i in order]


def detect(predict: Predict, videos: Sequence[Video], classes: Sequence[str],
           streams: Sequence[str], cfg: LocalizeConfig, seconds_per_segment: float,
           keep_outputs: Sequence[str] = ()):
  """Runs the model and localization over `videos`.

  Returns ({video: [results]} with every video a key, {video: outputs} for
  the videos named in keep_outputs).
  """
  results, kept = {}, {}
  for v in videos:
    outputs = predict(v.load(streams))
    dets = localization.localize(outputs, cfg)
    results[v.name] = video_results(dets, classes, seconds_per_segment, v.duration)
    if v.name in keep_outputs:
      kept[v.name] = (outputs, dets)
  return results, kept


def document(results: dict, external_data: dict | None = None) -> dict:
  return {"version": f"wtal_tf {__version__}", "results": results,
          "external_data": external_data or {}}


def default_path(model_dir: str, subset: str) -> str:
  return os.path.join(model_dir, f"detections_{subset}.json")


def localize_to_file(cfg: Config) -> tuple[str, dict, data.Dataset]:
  """Restores the model of cfg.train.model_dir, localizes the test subset, writes JSON.

  Returns the path written, the results it holds and the (test-only) dataset read.
  """
  model_dir = cfg.train.model_dir
  model, spec = checkpointing.restore(model_dir)
  dataset = data.load_dataset(cfg.data, include_train=False)
  if list(dataset.classes) != list(spec["classes"]):
    raise UserError(f"{model_dir}: the model was trained on classes {spec['classes']}, "
                    f"but {dataset.gt_source} gives {list(dataset.classes)}")
  if set(dataset.streams) != set(model.streams):
    raise UserError(f"--streams={','.join(dataset.streams)} but the model in {model_dir} "
                    f"has streams {','.join(model.streams)}")
  results, _ = detect(Predictor(model, dataset.feature_dims), dataset.test, dataset.classes,
                      model.streams, cfg.localize.for_model(model.loss_config.cls_loss),
                      cfg.data.seconds_per_segment)
  path = cfg.output or default_path(model_dir, cfg.data.test_subset)
  io_utils.write_json(path, document(results, {"model_dir": os.path.abspath(model_dir)}))
  return path, results, dataset
