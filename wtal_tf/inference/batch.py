"""Detections of a dataset's test videos: the model, localization, ActivityNet JSON.

With an outputs folder, each video's raw outputs are kept as `<video>.npz`
(OUTPUT_KEYS; numpy arrays, one set per stream), for analysis without the
package's internals:

  <stream>_attention    float32 [T]       attention λ_t
  <stream>_tcam         float32 [T, C+1]  T-CAM, the frame logits W x_t (column 0:
                                          background)
  <stream>_class_probs  float32 [C]       video-level class probabilities
  classes               str [C]           the class names, in column order
"""

import contextlib
import dataclasses
import json
import os
from typing import Optional, Sequence

from absl import logging

import numpy as np

from wtal_tf import contract
from wtal_tf import io_utils
from wtal_tf import locks
from wtal_tf.config import Config, LocalizeConfig
from wtal_tf.data import datasets as data
from wtal_tf.errors import UserError
from wtal_tf.evaluation import activitynet
from wtal_tf.evaluation import metrics
from wtal_tf.inference.predictor import Predictor, load_predictor
from wtal_tf.localization.localize import localize
from wtal_tf.localization.outputs import StreamOutput
from wtal_tf.modeling import checkpoints

OUTPUT_KEYS = {"attention": "attention", "tcam": "cas", "class_probs": "class_probs"}
LOCALIZE_KEY = "localize"  # in a detections file's external_data: the localization used
SCORED_KEY = "scored_by_its_run"  # ... true in the file train_eval wrote and scored
DATA_KEY = "data"  # ... the test set localized (data_record), in a subset's detections
STEP_KEY = "step"  # ... the training step of the model that made them
DATA_FIELDS = ("data_dir", "layout", "gt_file", "test_subset", "test_split")  # what decides
# the videos localized and their features (the time base is checked against the model)


def save_outputs(path: str, outputs: dict[str, StreamOutput], classes: Sequence[str]) -> None:
  """One video's outputs as an .npz (keys in the module docstring), written atomically."""
  arrays = {f"{s}_{key}": getattr(o, field) for s, o in outputs.items()
            for key, field in OUTPUT_KEYS.items()}
  with io_utils.atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      np.savez(f, classes=np.asarray(classes), **arrays)


def detect_one(predictor: Predictor, features: dict, classes: Sequence[str],
               seconds_per_segment: float, duration: float):
  """One video's (ActivityNet results, outputs, detections) from its {stream: [T, D]}."""
  outputs = predictor(features)
  dets = localize(outputs, predictor.localize_config)
  return (activitynet.video_results(dets, classes, seconds_per_segment, duration), outputs,
          dets)


def write_document(path: str, results: dict, **meta) -> str:
  """Writes `results` ({video: [results]}) as an ActivityNet JSON with `meta`."""
  io_utils.write_json(path, activitynet.document(results, meta))
  return path


def detect(predictor: Predictor, videos: Sequence[data.Video], classes: Sequence[str],
           seconds_per_segment: float, keep_outputs: Sequence[str] = (),
           outputs_dir: Optional[str] = None, listed: Sequence[str] = ()):
  """Runs the model and its localization config over `videos`.

  Returns ({video: [results]} with every video a key, and each name in `listed` not
  among them with an empty list (the test subset's: the videos --skip_invalid_videos
  left out appear too, SPEC 5); {video: (outputs, detections)} for the videos named in
  keep_outputs). With `outputs_dir`, writes every video's outputs there (save_outputs).
  """
  results, kept = {name: [] for name in listed}, {}
  for v in videos:
    results[v.name], outputs, dets = detect_one(predictor, v.load(predictor.streams), classes,
                                                seconds_per_segment, v.duration)
    if v.name in keep_outputs:
      kept[v.name] = (outputs, dets)
    if outputs_dir:
      save_outputs(os.path.join(outputs_dir, v.name + ".npz"), outputs, classes)
  return results, kept


def detections_path(cfg: Config, output: str = "") -> str:
  """Where the test set's detections go (`output`, default MODEL_DIR/detections_<test
  subset>.json), checked before the work: writable, and none of the files the run reads."""
  model_dir = cfg.train.model_dir
  output = output or activitynet.default_path(model_dir, cfg.data.test_subset)
  io_utils.check_writable(output, "detections file", {
      cfg.data.gt_file or contract.gt_path(cfg.data.data_dir): "ground truth of the dataset",
      cfg.data.class_list: "class list of --class_list", **checkpoints.model_files(model_dir)})
  return output


def localization_record(config: LocalizeConfig) -> dict:
  """The localization (resolved for its model) as a detections file records it, under
  LOCALIZE_KEY of its external_data: {field: JSON value}."""
  return json.loads(json.dumps(dataclasses.asdict(config)))


def data_record(data_config) -> dict:
  """The test set a subset's detections were made of, as their file records it under
  DATA_KEY: DATA_FIELDS (the ground truth's file as read, paths real; not a split the
  layout does not read)."""
  record = {f: getattr(data_config, f) for f in DATA_FIELDS}
  record["gt_file"] = data_config.gt_file or contract.gt_path(data_config.data_dir)
  for f in ("data_dir", "gt_file"):
    record[f] = os.path.realpath(record[f]) if record[f] else ""
  if data_config.layout == "wtalc":  # (its annotations and one array: DATA_DIR's)
    del record["test_split"], record["gt_file"]
  return record


def test_set_meta(cfg: Config, step: Optional[int]) -> dict:
  """What a subset's detections record of how they were made besides their localization:
  the test set (data_record) and the model's training step."""
  return {DATA_KEY: data_record(cfg.data), STEP_KEY: step}


def write_detections(cfg: Config, results: dict, output: str,
                     localize_config: LocalizeConfig, scored: bool = False, **meta) -> str:
  """Writes `results` as the ActivityNet JSON of cfg's model dir to `output` (see
  detections_path), with the localization that made them, whether the run that
  trained the model scores them (train_eval) and `meta` (e.g. test_set_meta);
  returns the path."""
  return write_document(output, results, model_dir=os.path.abspath(cfg.train.model_dir),
                        **meta, **{LOCALIZE_KEY: localization_record(localize_config),
                                   SCORED_KEY: scored})


def _show(value) -> str:
  """A recorded value as a flag gives it."""
  if isinstance(value, list):
    return ",".join(_show(v) for v in value)
  return f"{value:g}" if isinstance(value, float) else str(value)


def check_replaces_alike(path: str, records: dict) -> Optional[dict]:
  """The results of the detections at `path` when the model's own run (train_eval)
  wrote and scored them, made alike: `records` ({LOCALIZE_KEY: localization_record,
  DATA_KEY: data_record, STEP_KEY: step}) all equal to its own; else None. A UserError
  if it holds such detections made otherwise (another localization, test set or
  checkpoint): localize would silently replace them. Settings only one side records
  (another version's) are not compared; other files may be replaced (None)."""
  try:
    with open(path, encoding="utf-8") as f:
      document = json.load(f)
    meta = document["external_data"]
    scored = meta.get(SCORED_KEY) is True
  except (OSError, ValueError, KeyError, TypeError, AttributeError):
    return None
  if not scored:
    return None
  differ, complete = [], True
  for key, now in records.items():
    theirs = meta.get(key)
    if key == STEP_KEY:
      complete = complete and key in meta
      if key in meta and theirs != now:
        differ.append(f"the checkpoint of step {now} (its step {theirs})")
      continue
    if not isinstance(theirs, dict):
      complete = False
      continue
    complete = complete and set(now) <= set(theirs)
    differ += [f"--{k}={_show(v)} (its {_show(theirs[k])})" for k, v in now.items()
               if k in theirs and theirs[k] != v]
  if differ:
    raise UserError(f"{path}: holds the detections its model's run scored, made otherwise "
                    f"({'; '.join(differ)}): pass --output=FILE to write these elsewhere, "
                    "or remove it first")
  return document.get("results") if complete else None


def localize_to_file(cfg: Config, output: str = "", outputs_dir: str = ""
                     ) -> tuple[str, dict, data.Dataset]:
  """Restores the model of cfg.train.model_dir, localizes the test subset, writes JSON.

  Returns the path written, the results it holds and the (test-only) dataset read.
  """
  model_dir = cfg.train.model_dir
  default, output = not output, detections_path(cfg, output)
  predictor = load_predictor(model_dir, cfg.localize)
  made = test_set_meta(cfg, predictor.step)
  records = {LOCALIZE_KEY: localization_record(predictor.localize_config), **made}
  scored = check_replaces_alike(output, records) if default else None
  if set(cfg.data.streams) != set(predictor.streams):  # before reading a missing stream
    raise UserError(f"--streams={','.join(cfg.data.streams)} but the model in {model_dir} "
                    f"has streams {','.join(predictor.streams)}: pass "
                    f"--streams={','.join(predictor.streams)}")
  dataset = data.load_dataset(cfg.data, include_train=False, known_classes=predictor.classes)
  predictor.check_fits(dataset, model_dir)
  with (io_utils.writable_dir(outputs_dir, "outputs dir") if outputs_dir
        else contextlib.nullcontext()):
    results, _ = detect(predictor, dataset.test, dataset.classes, cfg.data.seconds_per_segment,
                        outputs_dir=outputs_dir or None, listed=dataset.test_gt)
  with locks.replacing_in(os.path.dirname(os.path.abspath(output))):
    if default:  # (again: its model's run may have written and scored them meanwhile)
      scored = check_replaces_alike(output, records)
    # The same detections again (features, ground truth and videos unchanged too): still
    # the scored ones, their scores kept.
    same = scored is not None and json.loads(json.dumps(results)) == scored
    write_detections(cfg, results, output, predictor.localize_config, scored=same, **made)
    if not same:
      remove_stale_scores(output)
  return output, results, dataset


def remove_stale_scores(detections: str) -> None:
  """Removes, with a warning, the scores evaluate wrote of an earlier `detections` file
  (beside it, naming it: they describe the detections just replaced). Any other file
  there is left alone: scores of another detections file (evaluate --output), or a file
  that is not scores; scores that do not name their detections (written before they
  did) are kept with a warning."""
  stale = activitynet.results_path(detections)
  try:
    with open(stale, encoding="utf-8") as f:
      scores = json.load(f)
  except (OSError, ValueError):
    return
  if not (isinstance(scores, dict) and set(metrics.SCORES_KEYS) <= set(scores)):
    return
  scored = scores.get(metrics.DETECTIONS_KEY)
  if isinstance(scored, str) and os.path.realpath(scored) == os.path.realpath(detections):
    os.remove(stale)
    logging.warning("%s: removed: the scores of the detections this run replaced (python -m "
                    "wtal_tf.evaluate scores the new ones)", stale)
  elif not isinstance(scored, str) or not os.path.exists(scored):  # (e.g. a moved folder)
    logging.warning("%s: kept, but it may hold the scores of the detections this run "
                    "replaced (it names %s)", stale,
                    "no detections file" if not isinstance(scored, str) else f"{scored}, "
                    "which is not there")
