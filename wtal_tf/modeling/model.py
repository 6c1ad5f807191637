"""The two-stream attention model with background modeling (paper §3.1, SPEC §1).

Each stream has its own `StreamBranch`: attention Ω (Dense(256, ReLU) ->
Dense(1, sigmoid)), a bias-free classifier W over C+1 classes (index 0 is
background) and bias-free clustering heads (u_fg, u_bg). One video is one
step; the time axis is left unknown so variable-length videos share a trace.
The model runs on TensorFlow (its train step, tf.function and checkpoints); under
another Keras backend it refuses to be built (feature extraction runs under JAX too).
"""

import zlib

import keras
import tensorflow as tf

from wtal_tf.modeling import losses
from wtal_tf import contract
from wtal_tf.config import LossConfig, ModelConfig
from wtal_tf.errors import UserError

BACKEND = "tensorflow"  # the Keras backend the model trains and runs on
DEFAULTS = ModelConfig()  # the layers' defaults are the flags'
SEED_STRIDE = 1_000_003  # a prime: the run seeds' stream seeds do not collide
SEED_MODULUS = 2**31 - 1  # stream seeds stay positive int32s


def stream_seed(seed: int, stream: str) -> int:
  """A per-stream initialiser seed: a branch starts the same with or without the other."""
  return (seed * SEED_STRIDE + zlib.crc32(stream.encode())) % SEED_MODULUS


@keras.saving.register_keras_serializable("wtal_tf")
class StreamBranch(keras.layers.Layer):
  """One stream's attention, classifier and clustering heads."""

  def __init__(self, num_classes: int, attention_units: int = DEFAULTS.attention_units,
               seed: int = 0, init_stddev: float = DEFAULTS.init_stddev, **kwargs):
    super().__init__(**kwargs)
    self.num_classes, self.attention_units, self.seed = num_classes, attention_units, seed
    self.init_stddev = init_stddev

    def init(k):
      if init_stddev > 0:
        return keras.initializers.RandomNormal(stddev=init_stddev, seed=seed + k)
      return keras.initializers.GlorotUniform(seed=seed + k)

    self.attention_hidden = keras.layers.Dense(attention_units, activation="relu",
                                               kernel_initializer=init(0), name="attention_hidden")
    self.attention_out = keras.layers.Dense(1, activation="sigmoid",
                                            kernel_initializer=init(1), name="attention_out")
    self.classifier = keras.layers.Dense(num_classes + 1, use_bias=False,
                                         kernel_initializer=init(2), name="classifier")
    self.cluster = keras.layers.Dense(2, use_bias=False, kernel_initializer=init(3),
                                      name="cluster")

  def build(self, input_shape):
    for layer in (self.attention_hidden, self.classifier, self.cluster):
      layer.build(input_shape)
    self.attention_out.build(tuple(input_shape[:-1]) + (self.attention_units,))

  def call(self, x):
    """x: [T, d] -> dict of attention [T], frame_logits [T, C+1], pooled logits.

    fg_logits = W x_fg with x_fg = (1/T) Σ λ_t x_t (Eq 1-2), computed as the
    attention-weighted mean of W x_t since W is linear; likewise bg_logits
    (Eq 4-5) and the clustering logits u·x_fg, u·x_bg (Eq 8-9).
    """
    attention = self.attention_out(self.attention_hidden(x))[:, 0]
    frame_logits = self.classifier(x)
    frame_cluster = self.cluster(x)
    fg_w = attention[:, None]
    bg_w = 1.0 - fg_w
    return {
        "attention": attention,
        "frame_logits": frame_logits,
        "fg_logits": tf.reduce_mean(fg_w * frame_logits, axis=0),
        "bg_logits": tf.reduce_mean(bg_w * frame_logits, axis=0),
        "cluster_fg": tf.reduce_mean(fg_w * frame_cluster, axis=0),
        "cluster_bg": tf.reduce_mean(bg_w * frame_cluster, axis=0),
    }

  def get_config(self):
    return {**super().get_config(), "num_classes": self.num_classes,
            "attention_units": self.attention_units, "seed": self.seed,
            "init_stddev": self.init_stddev}


@keras.saving.register_keras_serializable("wtal_tf")
class WTALModel(keras.Model):
  """One branch per stream; `train_step` sums the enabled, weighted losses of all."""

  def __init__(self, num_classes: int, streams=contract.STREAMS,
               attention_units: int = DEFAULTS.attention_units, loss_config: dict | None = None,
               seed: int = 0, init_stddev: float = DEFAULTS.init_stddev, **kwargs):
    if keras.backend.backend() != BACKEND:
      raise UserError(f"KERAS_BACKEND={keras.backend.backend()}: the localization model "
                      f"trains and runs on {BACKEND} only (feature extraction runs under "
                      f"JAX too); unset KERAS_BACKEND or set it to {BACKEND}")
    super().__init__(**kwargs)
    self.num_classes, self.streams = num_classes, tuple(streams)
    self.attention_units, self.seed, self.init_stddev = attention_units, seed, init_stddev
    self.loss_config = LossConfig.from_dict(loss_config or {})
    for s in self.streams:  # plain attributes: tf.train.Checkpoint does not track dicts
      setattr(self, f"{s}_branch", StreamBranch(num_classes, attention_units,
                                                stream_seed(seed, s), init_stddev,
                                                name=f"{s}_branch"))

  @property
  def branches(self) -> dict[str, StreamBranch]:
    return {s: getattr(self, f"{s}_branch") for s in self.streams}

  def build_for(self, feature_dims: dict[str, int]):
    """Creates the weights for the given per-stream feature dimensions."""
    for s in self.streams:
      self.branches[s].build((None, feature_dims[s]))
    self.built = True

  def call(self, features, training=False):
    """features: {stream: [T, d]} -> {stream: branch outputs}."""
    return {s: self.branches[s](features[s]) for s in self.streams}

  def compute_losses(self, data):
    features, labels = data
    return losses.total_loss(self(features, training=True), labels, self.loss_config)

  def train_step(self, data):
    """One video: ({stream: [T, d]}, labels [C]) -> {loss name: scalar}.

    The update is skipped when the loss or a gradient is not finite, so the
    weights stay usable; "finite" in the logs is then 0 and the trainer stops.
    """
    with tf.GradientTape() as tape:
      logs = self.compute_losses(data)
    variables = self.trainable_variables
    grads = tape.gradient(logs["total"], variables)
    # Heads of losses that are off (e.g. clustering) have no gradient.
    pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
    finite = tf.math.is_finite(logs["total"])
    for g, _ in pairs:
      finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(g)))

    def apply():
      self.optimizer.apply_gradients(pairs)
      return tf.constant(True)

    tf.cond(finite, apply, lambda: tf.constant(False))
    logs["finite"] = tf.cast(finite, logs["total"].dtype)
    return logs

  def test_step(self, data):
    return self.compute_losses(data)

  def get_config(self):
    return {**super().get_config(), "num_classes": self.num_classes,
            "streams": list(self.streams), "attention_units": self.attention_units,
            "loss_config": self.loss_config.to_dict(), "seed": self.seed,
            "init_stddev": self.init_stddev}
