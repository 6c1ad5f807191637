"""The training input: the order videos are visited in, and the tf.data stream of them.

One whole video per element, no padding: `training_order` fixes which video
each step sees (a pure function of seed and step, so resuming continues it
exactly) and `training_dataset` reads them in parallel with prefetch.
"""

from typing import Sequence

import numpy as np
import tensorflow as tf

from wtal_tf.data.datasets import Video, multi_hot


def training_order(num_main: int, num_extra: int, extra_weight: float, seed: int,
                   start_step: int, num_steps: int) -> np.ndarray:
  """Video indices for steps [start_step, start_step + num_steps).

  Each epoch is a fresh permutation drawn from (seed, epoch) alone, so the order
  is a pure function of the step: resuming at a step continues it exactly.
  Extra videos (indices >= num_main) appear round(extra_weight * num_extra)
  times an epoch.
  """
  num_extra_per_epoch = int(round(extra_weight * num_extra)) if num_extra else 0
  epoch_len = num_main + num_extra_per_epoch
  first_epoch, end = start_step // epoch_len, start_step + num_steps
  parts = []
  for epoch in range(first_epoch, -(-end // epoch_len)):
    rng = np.random.default_rng([seed, epoch])
    pool = np.arange(num_main)
    if num_extra_per_epoch:
      reps = -(-num_extra_per_epoch // num_extra)
      extra = np.concatenate([rng.permutation(num_extra) for _ in range(reps)])
      pool = np.concatenate([pool, num_main + extra[:num_extra_per_epoch]])
    parts.append(rng.permutation(pool))
  order = np.concatenate(parts) if parts else np.zeros(0, np.int64)
  offset = start_step - first_epoch * epoch_len
  return order[offset:offset + num_steps].astype(np.int64)


class FeatureCache:
  """Loads each video's streams once and keeps them in memory (opt-in)."""

  def __init__(self, streams: Sequence[str], enabled: bool):
    self.streams, self.enabled, self._store = tuple(streams), enabled, {}

  def load(self, video: Video) -> dict[str, np.ndarray]:
    key = (video.name, id(video.source))
    if key in self._store:
      return self._store[key]
    arrays = video.load(self.streams)
    if self.enabled:
      self._store[key] = arrays
    return arrays


def training_dataset(videos: Sequence[Video], order: np.ndarray, num_classes: int,
                     streams: Sequence[str], feature_dims: dict[str, int],
                     cache: FeatureCache):
  """tf.data stream of ({stream: [T, d]}, labels [C]), one whole video per element.

  No padding and no fixed-length sampling; reads run in parallel and are
  prefetched; element order follows `order` exactly.
  """
  labels = np.stack([multi_hot(v.labels, num_classes) for v in videos])
  streams = tuple(streams)

  def load(i):
    arrays = cache.load(videos[int(i)])
    return tuple(arrays[s] for s in streams) + (labels[int(i)],)

  def to_element(i):
    outs = tf.numpy_function(load, [i], [tf.float32] * (len(streams) + 1), stateful=False)
    features = {}
    for s, x in zip(streams, outs):
      x.set_shape([None, feature_dims[s]])
      features[s] = x
    outs[-1].set_shape([num_classes])
    return features, outs[-1]

  ds = tf.data.Dataset.from_tensor_slices(order)
  ds = ds.map(to_element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.prefetch(tf.data.AUTOTUNE).apply(tf.data.experimental.assert_cardinality(len(order)))


def element_signature(streams: Sequence[str], feature_dims: dict[str, int], num_classes: int):
  """The tf.TensorSpec structure of one training element (time axis None)."""
  return ({s: tf.TensorSpec([None, feature_dims[s]], tf.float32) for s in streams},
          tf.TensorSpec([num_classes], tf.float32))
