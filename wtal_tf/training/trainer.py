"""The training loop: one whole video per step, checkpoints, TensorBoard, evaluation."""

import collections
import contextlib
import dataclasses
import json
import math
import os
import time
from typing import Iterator, Optional

from absl import logging
import numpy as np
import tensorflow as tf

from wtal_tf import io_utils
from wtal_tf import locks
from wtal_tf.config import Config
from wtal_tf.config import LocalizeConfig
from wtal_tf.data import datasets as data
from wtal_tf.errors import UserError
from wtal_tf.evaluation import metrics
from wtal_tf.inference import batch
from wtal_tf.inference.predictor import Predictor
from wtal_tf.modeling import checkpoints
from wtal_tf.modeling.model import FINITE, WTALModel
from wtal_tf.training import input_pipeline
from wtal_tf.training.event_log import EventLog
from wtal_tf.training import optimizer
from wtal_tf.viz import plotting
from wtal_tf.viz import timeline


EVAL_HISTORY_FILE = "eval_history.json"  # MODEL_DIR/: every evaluation's mAP, across resumes,
# per evaluation settings


def _evaluation_settings(cfg: Config) -> dict:
  """What an evaluation's numbers depend on besides the model (as JSON holds it)."""
  return json.loads(json.dumps({"test_subset": cfg.data.test_subset,
                                "tious": list(cfg.eval.thresholds),
                                "localize": dataclasses.asdict(cfg.localize)}))


def _read_evaluations(path: str) -> list:
  """MODEL_DIR/eval_history.json's [{"settings", "history": [[step, mAP per tIoU]]}]; none
  when it is absent or unreadable (then it starts anew)."""
  try:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)["evaluations"]
    return [e for e in saved
            if isinstance(e["settings"], dict) and isinstance(e["history"], list)]
  except (OSError, ValueError, KeyError, TypeError):
    return []


def _earlier_evaluations(saved: list, settings: dict, start: int) -> list:
  """[(step, mAP per tIoU)] of earlier runs' evaluations under `settings` up to `start`
  (later ones were of steps about to be trained again)."""
  history = next((e["history"] for e in saved if e["settings"] == settings), [])
  return [(int(s), np.asarray(m, np.float64)) for s, m in history if s <= start]


class NonFiniteLoss(UserError):
  """A loss became NaN or inf; the last good checkpoint is kept."""


@dataclasses.dataclass
class TrainResult:
  steps: int  # global step reached
  traces: int  # times the video step was traced in this run
  losses: dict  # mean of each loss over the last logging window
  eval: Optional[metrics.EvalResult]
  history: list  # [(step, mAP per tIoU)] of the model's evaluations, earlier runs' too
  loss_history: list  # [(step, mean total loss over the logging window)]
  first_step_seconds: float
  detections: dict  # {video: [ActivityNet results]} of the final evaluation ({} without one)


def build_model(cfg: Config, dataset: data.Dataset) -> WTALModel:
  model = WTALModel(dataset.num_classes, dataset.streams, cfg.model.attention_units,
                    cfg.loss.to_dict(), cfg.train.seed, cfg.model.init_stddev)
  model.build_for(dataset.feature_dims)
  model.compile(optimizer=optimizer.optimizer(cfg.train.learning_rate), jit_compile=False)
  return model


def evaluate_model(predictor: Predictor, dataset: data.Dataset, cfg: Config,
                   keep_outputs=()):
  """Detections for the test videos and their mAP (None: no annotated instance to score
  against); also the kept videos' outputs."""
  results, kept = batch.detect(predictor, dataset.test, dataset.classes,
                               cfg.data.seconds_per_segment, keep_outputs,
                               listed=dataset.test_gt)
  if not dataset.scored:
    return results, None, kept
  result = metrics.score_results(dataset.test_gt, results, cfg.eval.thresholds,
                                    known_labels=set(dataset.classes))
  return results, result, kept


def _log_eval(events: EventLog, result: metrics.EvalResult, cfg: Config, step: int):
  """mAP in percent, as the tables print it."""
  with events.as_default(step):
    for t, m in zip(result.tious, result.mean_ap):
      events.scalar(f"mAP@{t:g}", m * metrics.PERCENT, description="mAP (%)")
    for name, value in result.averages(cfg.eval.averages).items():
      events.scalar(f"mAP {name}", value * metrics.PERCENT, description="mAP (%)")


def _log_timelines(events: EventLog, kept: dict, dataset: data.Dataset, cfg: Config,
                   localize_cfg: LocalizeConfig, step: int):
  """Timelines of a few fixed test videos to TensorBoard's Images tab."""
  with events.as_default(step):
    for name, (outputs, dets) in kept.items():
      panel = timeline.Panel(f"step {step}: {name}", outputs, dets, localize_cfg)
      fig = timeline.render([panel], dataset.classes, cfg.data.seconds_per_segment,
                            dataset.test_gt.get(name))
      events.image(f"timeline/{name}", plotting.to_array(fig)[None])


def compiled_train_step(model: WTALModel, dataset: data.Dataset, strategy=None):
  """model.video_step as one tf.function for every video length (no XLA).

  Returns (fn(features, labels) -> logs, traces) where traces[0] counts traces.
  """
  strategy = strategy or tf.distribute.get_strategy()
  traces = [0]

  def step_fn(features, labels):
    traces[0] += 1
    logs = strategy.run(model.video_step, args=((features, labels),))
    return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), logs)

  signature = input_pipeline.element_signature(dataset.streams, dataset.feature_dims,
                                               dataset.num_classes)
  return tf.function(step_fn, input_signature=signature, jit_compile=False), traces


def train(cfg: Config, dataset: Optional[data.Dataset] = None,
          flags_text: str = "") -> TrainResult:
  """Trains (resuming from the latest checkpoint in the model dir) and evaluates.

  flags_text: the run's experiment flags as a flagfile, written to MODEL_DIR/flags.cfg
  once the data has loaded and the model dir is known to fit the model ("": none).
  """
  with holding(cfg.train.model_dir):
    if dataset is None:
      dataset = data.load_dataset(cfg.data)
    if dataset.test and not dataset.scored:
      logging.warning("%s: no annotated instance in subset %r: its videos are localized at "
                      "each evaluation, not scored", dataset.gt_source, cfg.data.test_subset)
    if cfg.train.deterministic:
      tf.config.experimental.enable_op_determinism()
    return _train(cfg, dataset, flags_text)


@contextlib.contextmanager
def holding(model_dir: str) -> Iterator[None]:
  """Runs the body with `model_dir` made if needed, and held by this process alone (a
  training in it already: a UserError, before any data is read): two would mix their
  model.json, flags.cfg and checkpoints, or fail halfway through a save. A body that
  fails before writing in a folder made for it removes the folder."""
  if not model_dir:
    raise UserError("--model_dir is required")
  with io_utils.writable_dir(model_dir, "model dir"), locks.sole_writer(
      model_dir, "training", "--model_dir"):
    yield


def _train(cfg: Config, dataset: data.Dataset, flags_text: str) -> TrainResult:
  """train()'s work, in a model dir this process alone writes."""
  model_dir = cfg.train.model_dir
  strategy = tf.distribute.get_strategy()
  with strategy.scope():
    model = build_model(cfg, dataset)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
  checkpoints.prepare(model_dir, checkpoints.spec(model, dataset.classes, dataset.feature_dims,
                                                  dataset.features_made, dataset.timing),
                      flags_text, cfg.train.train_steps)
  manager = checkpoints.manager(model_dir, model=model, optimizer=model.optimizer, step=step)
  if manager.latest_checkpoint:
    checkpoints.load(manager.checkpoint, manager.latest_checkpoint)
    logging.info("resumed from %s at step %d", manager.latest_checkpoint, int(step))
  start = int(step.numpy())
  saved = start if manager.latest_checkpoint else None
  total_steps = cfg.train.train_steps

  order = input_pipeline.training_order(len(dataset.train) - dataset.num_extra,
                                        dataset.num_extra, cfg.data.extra_weight,
                                        cfg.train.seed, start, max(total_steps - start, 0))
  cache = input_pipeline.FeatureCache(dataset.streams, cfg.data.cache_features)
  ds = input_pipeline.training_dataset(dataset.train, order, dataset.num_classes,
                                       dataset.streams, dataset.feature_dims, cache)

  train_fn, traces = compiled_train_step(model, dataset, strategy)
  predictor = Predictor(model, dataset.feature_dims, cfg.localize)
  train_events = EventLog(os.path.join(model_dir, "train"))
  eval_events = EventLog(os.path.join(model_dir, "eval"))
  keep = [v.name for v in dataset.test[:cfg.train.num_vis_videos]]

  sums, count = collections.defaultdict(float), 0
  window_start, first_step_seconds = time.perf_counter(), 0.0
  history_path = os.path.join(model_dir, EVAL_HISTORY_FILE)
  settings, evaluations = _evaluation_settings(cfg), _read_evaluations(history_path)
  history = _earlier_evaluations(evaluations, settings, start)
  last_means, loss_history, result, detections = {}, [], None, {}

  def kept_checkpoint() -> str:
    last = manager.latest_checkpoint
    return (f"the last good checkpoint is kept ({last})" if last
            else "before any checkpoint was saved")

  def save(s):
    """Checkpoints, unless an update overflowed the weights (then the last good one stays)."""
    if not all(bool(tf.reduce_all(tf.math.is_finite(v))) for v in model.weights):
      raise NonFiniteLoss(f"weights became non-finite by step {s}; stopped, "
                          f"{kept_checkpoint()}")
    train_events.flush()  # (lost events stop the run before the checkpoint passes them)
    checkpoints.save(manager, s)

  def evaluated(s) -> bool:
    return any(k == s for k, _ in history)

  def run_eval(s):
    nonlocal result, detections
    detections, result, kept = evaluate_model(predictor, dataset, cfg, keep)
    if not evaluated(s):  # (a finished model's rerun: logged already)
      if result is not None:
        _log_eval(eval_events, result, cfg, s)
      _log_timelines(eval_events, kept, dataset, cfg, predictor.localize_config, s)
      eval_events.flush()  # (before eval_history.json marks the step logged)
    if result is not None:
      while history and history[-1][0] >= s:  # (an earlier run's evaluation of this step)
        history.pop()
      history.append((s, result.mean_ap.copy()))
      io_utils.write_json(history_path, {"evaluations": [
          *(e for e in evaluations if e["settings"] != settings),  # (other settings' apart)
          {"settings": settings, "history": [[k, m.tolist()] for k, m in history]}]})
      logging.info("step %d: mAP %s", s, np.round(result.mean_ap * metrics.PERCENT, 2).tolist())

  def eval_due(s) -> bool:
    return bool(cfg.train.eval_every and s % cfg.train.eval_every == 0 and s != total_steps
                and dataset.test)

  # The run that saved this checkpoint ended before its evaluation (an unscored test set
  # leaves no history to tell).
  if 0 < start < total_steps and eval_due(start) and dataset.scored and not evaluated(start):
    run_eval(start)
  s = start
  for features, labels in ds:
    t0 = time.perf_counter()
    logs = train_fn(features, labels)
    total = float(logs["total"])
    if s == start:
      first_step_seconds = time.perf_counter() - t0
    s += 1
    step.assign(s)
    if not (math.isfinite(total) and float(logs[FINITE])):
      what = total if not math.isfinite(total) else "finite, but a gradient was not"
      raise NonFiniteLoss(f"loss became {what} at step {s}; stopped without applying that "
                          f"update, {kept_checkpoint()}")
    for k, v in logs.items():
      if k == FINITE:
        continue
      sums[k] += float(v)
    count += 1
    if s % cfg.train.log_every == 0 or s == total_steps:
      elapsed = time.perf_counter() - window_start
      last_means = {k: v / count for k, v in sums.items()}
      loss_history.append((s, last_means["total"]))
      with train_events.as_default(s):
        for k, v in last_means.items():
          train_events.scalar(f"loss/{k}", v)
        train_events.scalar("learning_rate", float(model.optimizer.learning_rate))
        train_events.scalar("steps_per_second", count / elapsed)
      logging.info("step %d: loss %.4f (%.1f steps/s)", s, last_means["total"], count / elapsed)
      sums, count, window_start = collections.defaultdict(float), 0, time.perf_counter()
    if s % cfg.train.checkpoint_every == 0 or s == total_steps:
      save(s)
      saved = s
    if eval_due(s):
      run_eval(s)
  if saved != int(step):
    save(int(step))
  if dataset.test:
    run_eval(int(step))
  train_events.flush()
  eval_events.flush()
  return TrainResult(int(step), traces[0], last_means, result, history, loss_history,
                     first_step_seconds, detections)
