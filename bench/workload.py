"""THUMOS14-sized workloads: video lengths drawn from THUMOS14's duration statistics."""

import numpy as np

from wtal_tf.data import synthetic


def thumos_lengths(count: int, subset: str, seed: int, seconds_per_segment: float = 0.64):
  rng = np.random.default_rng(seed)
  seconds = np.clip(np.exp(rng.normal(*synthetic.DURATION_LOG[subset], size=count)),
                    *synthetic.DURATION_RANGE_S)
  return np.maximum(1, np.round(seconds / seconds_per_segment)).astype(int)
