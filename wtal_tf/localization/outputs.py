"""One video's model outputs per stream, as numpy on the host."""

import dataclasses

import numpy as np


@dataclasses.dataclass
class StreamOutput:
  attention: np.ndarray  # [T] λ_t
  cas: np.ndarray  # [T, C+1] frame logits W x_t (the T-CAM; index 0 background)
  class_probs: np.ndarray  # [C] video-level foreground probabilities
