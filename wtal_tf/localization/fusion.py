"""Two-stream fusion with the RGB weight θ (SPEC §4): fused probabilities, attention, T-CAMs.

Numpy on the host.
"""

from typing import Mapping, Sequence

import numpy as np
from scipy import special

from wtal_tf.localization.outputs import StreamOutput


def stream_weights(streams: Sequence[str], theta: float) -> dict[str, float]:
  """θ for RGB and 1-θ for flow; a single stream gets weight 1."""
  if len(streams) == 1:
    return {streams[0]: 1.0}
  return {"rgb": theta, "flow": 1.0 - theta}


def fuse(outputs: Mapping[str, StreamOutput], theta: float):
  """Fused video probabilities [C], attention [T] and weighted T-CAM [T, C]."""
  weights = stream_weights(list(outputs), theta)
  probs = sum(w * outputs[s].class_probs for s, w in weights.items())
  attention = sum(w * outputs[s].attention for s, w in weights.items())
  wcas = sum(w * outputs[s].attention[:, None] * outputs[s].cas[:, 1:]
             for s, w in weights.items())
  return probs, attention, wcas


def tcam_signal(outputs: Mapping[str, StreamOutput], theta: float, classes) -> np.ndarray:
  """STPN's proposal signal: fused λ_t·sigmoid(T-CAM) of each class, [K, T]."""
  weights = stream_weights(list(outputs), theta)
  return sum(w * (outputs[s].attention[:, None]
                  * special.expit(outputs[s].cas[:, 1:][:, classes])).T
             for s, w in weights.items())
