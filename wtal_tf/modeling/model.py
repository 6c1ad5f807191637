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
FIT_TOTAL = "loss"  # total_loss's "total" as Keras' fit and evaluate log it (the name
# their callbacks watch by default: EarlyStopping's and ModelCheckpoint's "val_loss")
FINITE = "finite"  # in a step's logs: 1 when its update was applied (loss and gradients
# finite), 0 when skipped
UNSUPPORTED_COMPUTE_DTYPES = ("float16",)  # mixed_float16 needs loss scaling, whose skipped
# steps the train step would take for a diverged model


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
    """x: [T, d] (one whole video, no batch axis) -> dict of attention [T],
    frame_logits [T, C+1], pooled logits.

    fg_logits = W x_fg with x_fg = (1/T) Σ λ_t x_t (Eq 1-2), computed as the
    attention-weighted mean of W x_t since W is linear; likewise bg_logits
    (Eq 4-5) and the clustering logits u·x_fg, u·x_bg (Eq 8-9).
    """
    if len(x.shape) != 2:  # (a batch [B, T, d] would pool over the wrong axis, silently)
      raise ValueError(f"{self.name}: expected one video's features [T, d] (no batch "
                       f"axis), got shape {tuple(x.shape)}")
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
  """One branch per stream; `train_step` sums the enabled, weighted losses of all.

  One call is one whole video: features {stream: [T, d]}, no batch axis, any T (so
  Keras' `predict`, which cuts its input into batches, is refused). Keras' `fit` and
  `evaluate` work on a tf.data.Dataset of (features, labels [C]) elements, one video
  each, and log the mean of each loss over the epoch ("loss": the total).
  """

  def __init__(self, num_classes: int, streams=contract.STREAMS,
               attention_units: int = DEFAULTS.attention_units,
               loss_config: LossConfig | dict | None = None,
               seed: int = 0, init_stddev: float = DEFAULTS.init_stddev, **kwargs):
    if keras.backend.backend() != BACKEND:
      raise UserError(f"KERAS_BACKEND={keras.backend.backend()}: the localization model "
                      f"trains and runs on {BACKEND} only (feature extraction runs under "
                      f"JAX too); unset KERAS_BACKEND or set it to {BACKEND}")
    super().__init__(**kwargs)
    if num_classes < 1:
      raise ValueError(f"num_classes={num_classes}: at least 1")
    if self.dtype_policy.compute_dtype in UNSUPPORTED_COMPUTE_DTYPES:
      raise ValueError(f"dtype policy {self.dtype_policy.name}: not supported (its loss "
                       "scaling skips steps, which the train step takes for a diverged "
                       "model); float32 or mixed_bfloat16")
    self.num_classes, self.streams = num_classes, tuple(streams)
    self.attention_units, self.seed, self.init_stddev = attention_units, seed, init_stddev
    self.loss_config = (loss_config if isinstance(loss_config, LossConfig)
                        else LossConfig.from_dict(loss_config or {}))
    for s in self.streams:  # plain attributes: tf.train.Checkpoint does not track dicts
      setattr(self, f"{s}_branch", StreamBranch(num_classes, attention_units,
                                                stream_seed(seed, s), init_stddev,
                                                name=f"{s}_branch"))
    # Keras' fit/evaluate logs: the mean of each loss term over the epoch.
    names = [FIT_TOTAL, FINITE] + [f"{s}/{k}" for s in self.streams
                                   for k in (*self.loss_config.losses, "total")]
    self.trackers = {n: keras.metrics.Mean(name=n) for n in names}

  @property
  def branches(self) -> dict[str, StreamBranch]:
    return {s: getattr(self, f"{s}_branch") for s in self.streams}

  @property
  def metrics(self):
    """What Keras resets each epoch and logs: the loss trackers (compile takes none)."""
    return list(self.trackers.values())

  def build(self, input_shape):
    """input_shape: {stream: (T, d)} (T may be None). Keras records it, so a saved
    `.keras` model is built again before its weights load."""
    missing = [s for s in self.streams if s not in input_shape]
    if missing:
      raise ValueError(f"input shapes {dict(input_shape)}: none for the streams {missing}")
    for s in self.streams:
      self.branches[s].build((None, input_shape[s][-1]))

  def build_for(self, feature_dims: dict[str, int]):
    """Creates the weights for the given per-stream feature dimensions."""
    self.build({s: (None, feature_dims[s]) for s in self.streams})

  def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
    """Keras' compile with an optimizer (and its run options): the losses are the
    model's own (Eq 11, `loss_config`), each logged; `loss` and metrics are refused."""
    given = [k for k, v in (("loss", loss), ("metrics", metrics), *kwargs.items())
             if k in ("loss", "metrics", "loss_weights", "weighted_metrics") and v is not None]
    if given:
      raise ValueError(f"compile({', '.join(given)}=...): WTALModel computes its own losses "
                       "(Eq 11, set by loss_config) and logs each term; give only an optimizer")
    super().compile(optimizer=optimizer, **kwargs)
    if self.built:  # (a step updates only the heads of the losses that are on)
      self.optimizer.build(self.trainable_variables)

  def compile_from_config(self, config):
    """A loaded `.keras` model is compiled as it was saved (Keras skips this for a model
    whose compile is its own)."""
    self.compile(**keras.saving.deserialize_keras_object(config))

  def call(self, features, training=False):
    """features: {stream: [T, d]}, one video -> {stream: branch outputs}."""
    missing = [s for s in self.streams if s not in features]
    if missing:
      raise ValueError(f"features of streams {sorted(features)}: the model takes "
                       f"{list(self.streams)}, {missing} missing")
    return {s: self.branches[s](features[s]) for s in self.streams}

  def predict(self, *args, **kwargs):
    raise NotImplementedError(
        "WTALModel.predict: Keras' predict cuts its input into batches along the first "
        "axis and concatenates the outputs, which mixes one video's segments or the "
        "videos of a dataset; call the model on one video's features at a time, or use "
        "wtal_tf.inference.predictor (README, Python API)")

  def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None,
             **kwargs):
    """A TensorFlow SavedModel for serving (TF Serving, tf.saved_model.load): its endpoint
    "serve" takes one video {stream: float32 [T, d]}, any T, and returns the branch
    outputs flat, {"<stream>_<output>": tensor} (a serving signature's outputs cannot
    nest). Keras' other formats add a batch axis, which the model does not take."""
    if format != "tf_saved_model":
      raise ValueError(f"export(format={format!r}): only 'tf_saved_model' (the model takes "
                       "one video [T, d], no batch axis)")
    if not self.built:
      raise ValueError("export: build the model first (build_for, or a call on one video)")
    if input_signature is None:
      input_signature = [{s: tf.TensorSpec([None, b.attention_hidden.kernel.shape[0]],
                                            tf.float32, name=s)
                          for s, b in self.branches.items()}]
    archive = keras.export.ExportArchive()
    archive.track(self)
    archive.add_endpoint("serve", self.flat_outputs, input_signature=input_signature)
    archive.write_out(filepath, verbose=True if verbose is None else verbose, **kwargs)

  def flat_outputs(self, features) -> dict:
    """{"<stream>_<output>": tensor} of one video's features: the model's outputs, flat."""
    return {f"{s}_{k}": v for s, out in self(features).items() for k, v in out.items()}

  def compute_losses(self, data):
    """(features {stream: [T, d]}, labels [C]) -> total_loss' {name: scalar}, in float32
    (as are the labels, whatever their dtype)."""
    features, labels = data
    outputs = tf.nest.map_structure(lambda t: tf.cast(t, tf.float32),
                                    self(features, training=True))
    return losses.total_loss(outputs, tf.cast(labels, tf.float32), self.loss_config)

  def video_step(self, data):
    """One update on one video: ({stream: [T, d]}, labels [C]) -> this video's
    {loss name: scalar} (total_loss's) and FINITE. The trainer's loop steps with this.

    The update is skipped when the loss or a gradient is not finite, so the
    weights stay usable; FINITE is then 0 (the trainer stops; under Keras' fit the
    epoch's FINITE mean falls below 1 and the losses' means are not finite, which
    keras.callbacks.TerminateOnNaN stops at).
    """
    with tf.GradientTape() as tape:
      logs = self.compute_losses(data)  # (builds the model on its first call)
    variables = self.trainable_variables
    if not self.optimizer.built:  # on every variable, as compile and the trainer build it
      self.optimizer.build(variables)
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
    logs[FINITE] = tf.cast(finite, logs["total"].dtype)
    return logs

  def train_step(self, data):
    """Keras fit's step: video_step, logged as means over the epoch so far."""
    return self._logged(self.video_step(data))

  def test_step(self, data):
    """Keras evaluate's step: the losses of one video, logged as means so far."""
    return self._logged(self.compute_losses(data))

  def _logged(self, logs: dict) -> dict:
    names = [FIT_TOTAL if k == "total" else k for k in logs]
    for name, value in zip(names, logs.values()):
      # The count's update waits for the data: at the end of a dataset of unknown length
      # Keras calls the step once more and the data never comes, but a constant count
      # (1 per scalar) would be added all the same.
      with tf.control_dependencies([value]):
        self.trackers[name].update_state(value)
    return {name: self.trackers[name].result() for name in names}

  def get_config(self):
    return {**super().get_config(), "num_classes": self.num_classes,
            "streams": list(self.streams), "attention_units": self.attention_units,
            "loss_config": self.loss_config.to_dict(), "seed": self.seed,
            "init_stddev": self.init_stddev}
