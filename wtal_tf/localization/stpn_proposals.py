"""STPN's post-processing (Nguyen, Liu, Prasad, Han, CVPR 2018, §3.4), `--proposal_source=stpn`.

Host-side numpy, one video at a time:

1. per stream s, the classes c whose video probability (the stream's
   `class_probs`: σ(logit) for a model trained with the sigmoid loss, as STPN,
   else its softmax probability) exceeds `class_threshold` (its default is STPN's);
2. the signal ψˢ_t,c = λˢ_t·σ(T-CAMˢ_t,c) and the score signal
   φˢ_t,c = λˢ_t·(θ_s·T-CAMˢ_t,c + (1−θ_s)·T-CAM^other_t,c), θ_rgb = θ,
   θ_flow = 1−θ (a lone stream: θ_s = 1), are upsampled linearly by
   `stpn_upsample` samples per segment (`upsample`);
3. ψ is kept where ≥ `stpn_signal_threshold`; every maximal run of kept
   samples i..j is a proposal [i/U, (j+1)/U) in (fractional) segment units,
   scored by the mean of φ over the run;
4. the proposals of a class from both streams are pooled and class-wise NMS
   at `nms_threshold` is applied; seconds = segment units × F/fps.

Choices the STPN paper leaves open, and how they compare with the public
reproduction (bellos1203/STPN):
- Interpolation grid: a segment's value sits at its centre, so upsampled
  sample i (covering [i/U, (i+1)/U) segments) takes the linear interpolation
  at segment index (i+0.5)/U − 0.5, held constant beyond the first and last
  centres (np.interp). The reproduction samples at index i/U and linearly
  extrapolates past the last segment, which shifts everything by half a
  segment.
- The score signal φ is built per segment and then upsampled (as the
  reproduction does), not λ and T-CAM upsampled separately and multiplied.
- T-CAM is the raw per-segment logit W x_t (the classifier has no bias);
  the background column of the C+1 classifier is not used.
- A stream with no class above the threshold contributes no proposal (no
  fallback to the most probable class); a class found by one stream only
  still goes through NMS (the reproduction skips NMS then).
- NMS suppresses a proposal whose tIoU with a kept, higher-scoring one
  exceeds the threshold (as `tf.image.non_max_suppression`).
"""

from typing import Mapping

import numpy as np
from scipy import special

from wtal_tf.config import LocalizeConfig
from wtal_tf.localization import detections
from wtal_tf.localization import fusion
from wtal_tf.localization import nms
from wtal_tf.localization.outputs import StreamOutput


def upsample(x: np.ndarray, factor: int) -> np.ndarray:
  """Linear upsampling of x [T, K] along T to [T·factor, K].

  Sample i covers [i/factor, (i+1)/factor) segments and takes the linear
  interpolation of the segment-centre values at segment index
  (i + 0.5)/factor − 0.5, clamped to [0, T − 1].
  """
  t = x.shape[0]
  pos = np.clip((np.arange(t * factor) + 0.5) / factor - 0.5, 0.0, t - 1)
  lo = np.floor(pos).astype(np.int64)
  hi = np.minimum(lo + 1, t - 1)
  w = (pos - lo)[:, None]
  return (1.0 - w) * x[lo] + w * x[hi]


def stream_signals(outputs: Mapping[str, StreamOutput], stream: str, classes: np.ndarray,
                   theta: float) -> tuple[np.ndarray, np.ndarray]:
  """(ψ, φ) of one stream for the given classes, per segment, each [T, K].

  ψ = λˢ·σ(T-CAMˢ); φ = λˢ·(θ_s·T-CAMˢ + (1−θ_s)·T-CAM^other) with θ_s the
  stream's own weight (θ for rgb, 1−θ for flow, 1 when alone).
  """
  out = outputs[stream]
  own = fusion.stream_weights(list(outputs), theta)[stream]
  cam = out.cas[:, 1:][:, classes]
  mixed = own * cam
  for other, o in outputs.items():
    if other != stream:
      mixed = mixed + (1.0 - own) * o.cas[:, 1:][:, classes]
  lam = out.attention[:, None]
  return lam * special.expit(cam), lam * mixed


def stream_proposals(outputs: Mapping[str, StreamOutput], stream: str,
                     cfg: LocalizeConfig):
  """One stream's proposals: (classes, starts, stops, scores), starts/stops in segments."""
  classes = np.flatnonzero(outputs[stream].class_probs > cfg.class_threshold)
  if not len(classes):
    empty = np.zeros(0)
    return np.zeros(0, np.int64), empty, empty, empty
  psi, phi = stream_signals(outputs, stream, classes, cfg.theta)
  u = cfg.stpn_upsample
  psi, phi = upsample(psi, u), upsample(phi, u)  # [T·U, K]
  rows, first, last = detections.true_runs((psi >= cfg.stpn_signal_threshold).T)
  prefix = np.concatenate([np.zeros((1, phi.shape[1])), np.cumsum(phi, axis=0)])
  scores = (prefix[last + 1, rows] - prefix[first, rows]) / (last + 1 - first)
  return classes[rows], first / u, (last + 1) / u, scores


def localize(outputs: Mapping[str, StreamOutput], cfg: LocalizeConfig
             ) -> detections.Detections:
  """STPN's detections of one video; starts/ends fractional, ends as end + 1 = stop."""
  parts = [stream_proposals(outputs, s, cfg) for s in outputs]
  classes, starts, stops, scores = (np.concatenate(p) for p in zip(*parts))
  return nms.classwise_nms(classes, starts, stops - 1.0, scores, cfg.nms_threshold)
