"""Device-side forward pass over whole videos, returning numpy for the host."""

import os

import numpy as np
import tensorflow as tf

from wtal_tf import checkpointing
from wtal_tf import data
from wtal_tf import export
from wtal_tf import io_utils
from wtal_tf.config import Config, LocalizeConfig
from wtal_tf.errors import UserError
from wtal_tf.model import WTALModel
from wtal_tf.outputs import StreamOutput


class Predictor:
  """Runs the model on one video at a time; one trace for all lengths.

  This is where the localization config meets the model: `localize_config`
  is the given one with --proposal_source=auto resolved for the model's
  classification loss (LocalizeConfig.for_model), once, for every caller.
  """

  def __init__(self, model: WTALModel, feature_dims: dict[str, int],
               localize: LocalizeConfig):
    self.model = model
    self.streams = model.streams
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

  def __call__(self, features: dict[str, np.ndarray]) -> dict[str, StreamOutput]:
    outs = self._forward({s: features[s] for s in self.model.streams})
    return {s: StreamOutput(**{k: v.numpy() for k, v in o.items()}) for s, o in outs.items()}


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
  predictor = Predictor(model, dataset.feature_dims, cfg.localize)
  results, _ = export.detect(predictor, dataset.test, dataset.classes,
                             cfg.data.seconds_per_segment)
  path = cfg.output or export.default_path(model_dir, cfg.data.test_subset)
  io_utils.write_json(path, export.document(results, {"model_dir": os.path.abspath(model_dir)}))
  return path, results, dataset
