"""Device-side forward pass over whole videos, returning numpy for the host."""

import dataclasses

import numpy as np
import tensorflow as tf

from wtal_tf.model import WTALModel


@dataclasses.dataclass
class StreamOutput:
  attention: np.ndarray  # [T] λ_t
  cas: np.ndarray  # [T, C+1] frame logits W x_t (the T-CAM; index 0 background)
  class_probs: np.ndarray  # [C] video-level foreground probabilities


class Predictor:
  """Runs the model on one video at a time; one trace for all lengths."""

  def __init__(self, model: WTALModel, feature_dims: dict[str, int]):
    self.model = model
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
