"""Device-side forward pass over whole videos, returning numpy for the host."""

from typing import Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from wtal_tf.config import DataConfig, LocalizeConfig
from wtal_tf.data import datasets as data
from wtal_tf.data import made as made_lib
from wtal_tf.errors import UserError, first_few
from wtal_tf.localization.outputs import StreamOutput
from wtal_tf.modeling import checkpoints
from wtal_tf.modeling.model import WTALModel

CLASSES_SHOWN = 5  # class names a message about differing class lists names


class Predictor:
  """Runs the model on one video at a time; one trace for all lengths.

  This is where the localization config meets the model: `localize_config`
  is the given one with --proposal_source=auto resolved for the model's
  classification loss (LocalizeConfig.for_model), once, for every caller.
  `classes` is the model's class list when it was restored from a model dir
  (load_predictor), else None.
  """

  def __init__(self, model: WTALModel, feature_dims: dict[str, int],
               localize: LocalizeConfig, classes=None, features_made=None, timing=None,
               step=None):
    self.model = model
    self.step = step  # the training step of its checkpoint, if restored from one
    self.features_made = features_made  # how its training features were made, if known
    self.timing = timing  # what a segment of its training features is in time, if known
    self.streams = model.streams
    self.feature_dims = dict(feature_dims)
    self.classes = None if classes is None else tuple(classes)
    self.localize_config = localize.for_model(model.loss_config.cls_loss)
    self.sigmoid = model.loss_config.cls_loss == "sigmoid"
    spec = {s: tf.TensorSpec([None, feature_dims[s]], tf.float32) for s in model.streams}
    self._forward = tf.function(self._forward_fn, input_signature=[spec], jit_compile=False)

  def _forward_fn(self, features):
    outs = self.model(features, training=False)
    result = {}
    for s, o in outs.items():
      if self.sigmoid:
        probs = tf.sigmoid(o["fg_logits"][1:])
      else:
        probs = tf.nn.softmax(o["fg_logits"])[1:]
      result[s] = {"attention": o["attention"], "cas": o["frame_logits"], "class_probs": probs}
    return result

  def check_fits(self, dataset: data.Dataset, model_dir: str) -> None:
    """A UserError unless `dataset` has the model's classes, streams and feature sizes."""
    if self.classes is not None and list(dataset.classes) != list(self.classes):
      raise UserError(f"{model_dir}: {class_differences(self.classes, dataset.classes)}, "
                      f"in {dataset.class_source}: the model's classes, in its order, are "
                      f"its {checkpoints.SPEC_FILE}'s \"classes\"")
    if not set(self.streams) <= set(dataset.streams):
      raise UserError(f"--streams={','.join(dataset.streams)} but the model in {model_dir} "
                      f"has streams {','.join(self.streams)}")
    wrong = {s: dataset.feature_dims[s] for s in self.streams
             if s in dataset.feature_dims and dataset.feature_dims[s] != self.feature_dims[s]}
    if wrong:
      raise UserError(f"{model_dir}: the model was trained on features of sizes "
                      f"{ {s: self.feature_dims[s] for s in wrong} }, but the data has {wrong}")
    self.check_timing(dataset.timing, model_dir)
    if self.features_made and dataset.features_made:
      differ = made_lib.differences(self.features_made, dataset.features_made)
      if differ:
        logging.warning("%s: the model was trained on features made otherwise than these "
                        "(%s): its scores on them are not to be trusted", model_dir,
                        "; ".join(differ))
    elif dataset.features_made:
      logging.warning("%s: the model %s: these features are not checked against them",
                      model_dir, checkpoints.UNRECORDED)

  @property
  def seconds_per_segment(self) -> Optional[float]:
    """What one segment of the model's training features is in seconds, for detect_one
    (None: its model dir does not record it)."""
    return DataConfig(**self.timing).seconds_per_segment if self.timing else None

  def check_timing(self, timing: Optional[dict], model_dir: str,
                   now: str = "these flags say", fix: str = "") -> None:
    """A UserError when segments of `timing` are another length in time than the model's
    training features' (detections would be in the wrong seconds); `now` says where
    `timing` comes from, `fix` what to do (default: pass the model's flags)."""
    if self.timing and timing and self.timing != timing:
      raise UserError(f"{model_dir}: the model was trained on features of "
                      f"{_timing_flags(self.timing)}, but {now} {_timing_flags(timing)}: "
                      f"{fix or 'pass ' + _timing_flags(self.timing)}")

  def __call__(self, features: dict[str, np.ndarray]) -> dict[str, StreamOutput]:
    """One video's outputs from its features {stream: [T, d]} (T > 0, the same in each
    stream: its segments)."""
    lengths = {s: len(features[s]) for s in self.model.streams}
    if len(set(lengths.values())) > 1 or 0 in lengths.values():
      raise ValueError(f"one video's features: {lengths} segments per stream; the streams "
                       "must have the same number, above 0")
    outs = self._forward({s: features[s] for s in self.model.streams})
    return {s: StreamOutput(**{k: v.numpy() for k, v in o.items()}) for s, o in outs.items()}


def class_differences(model: Sequence[str], data: Sequence[str]) -> str:
  """How a dataset's class list differs from a model's, for a message: its classes the
  model does not have, else the model's it lacks, else the order."""
  model_set, data_set = set(model), set(data)
  unknown = [c for c in data if c not in model_set]
  lacking = [c for c in model if c not in data_set]
  if unknown:
    how = f"{len(unknown)} of them the model does not have ({first_few(unknown, CLASSES_SHOWN)})"
  elif lacking:
    how = f"without {len(lacking)} of the model's ({first_few(lacking, CLASSES_SHOWN)})"
  else:
    how = "in another order"
  return f"the model was trained on {len(model)} classes; the data has {len(data)}, {how}"


def _timing_flags(timing: dict) -> str:
  """--feature_fps=30 --segment_frames=16, each value as short as it reads back the same."""
  return " ".join(f"--{k}={v:g}" if float(f"{v:g}") == v else f"--{k}={v!r}"
                  for k, v in sorted(timing.items()))


def load_predictor(model_dir: str, localize: LocalizeConfig) -> Predictor:
  """The predictor of the latest checkpoint in `model_dir` (UserError if there is none)."""
  model, spec, prefix = checkpoints.restore_latest(model_dir)  # (its step: the weights')
  return Predictor(model, spec["feature_dims"], localize, spec["classes"],
                   spec.get("features_made"), spec.get("segment_timing"),
                   checkpoints.step_of(prefix))
