"""STPN's post-processing against numbers computed by hand on tiny signals."""

import numpy as np
import pytest
from scipy import special

from wtal_tf import config as C
from wtal_tf.localization import detections
from wtal_tf.localization.localize import localize
from wtal_tf.localization import stpn_proposals
from wtal_tf.localization.outputs import StreamOutput

SIG2 = special.expit(2.0)


def output(attention, cam, probs):
  """A stream with one T-CAM column per class (background column 0 set to 9, unused)."""
  cam = np.asarray(cam, float).reshape(len(attention), -1)
  cas = np.concatenate([np.full((len(attention), 1), 9.0), cam], axis=1)
  return StreamOutput(np.asarray(attention, float), cas, np.asarray(probs, float))


def cfg(**kw):
  return C.LocalizeConfig(proposal_source="stpn", **kw)


def test_upsample_samples_segment_centres():
  # T = 3, ×2: sample i at index (i + 0.5)/2 - 0.5 = -0.25, 0.25, 0.75, 1.25, 1.75, 2.25,
  # clamped to [0, 2]: values 0, 0.25, 0.75, 1 + 0.25·2, 1 + 0.75·2, 3.
  got = stpn_proposals.upsample(np.array([[0.0], [1.0], [3.0]]), 2)
  np.testing.assert_allclose(got[:, 0], [0, 0.25, 0.75, 1.5, 2.5, 3.0])
  assert stpn_proposals.upsample(np.ones((5, 2)), 24).shape == (120, 2)


def test_fractional_boundaries_and_score():
  # ψ = λ·σ(2) = [0, 0.1, 0.04] per segment. ×4: samples 0..11 sit at segment
  # indices clamp((i + 0.5)/4 - 0.5) = 0, 0, .125, .375, .625, .875, 1.125, 1.375,
  # 1.625, 1.875, 2, 2 where ψ = 0, 0, .0125, .0375, .0625, .0875, .0925, .0775,
  # .0625, .0475, .04, .04: kept (≥ 0.05) are samples 4..8, i.e. [4/4, 9/4) segments.
  psi = np.array([0.0, 0.1, 0.04])
  out = output(psi / SIG2, [2.0, 2.0, 2.0], [0.9])
  dets = localize({"rgb": out}, cfg(stpn_upsample=4))
  assert dets.classes.tolist() == [0]
  assert dets.starts[0] == pytest.approx(1.0) and dets.ends[0] + 1 == pytest.approx(2.25)
  # score: the mean over the run of λ·T-CAM = (2/σ(2))·ψ (a lone stream has θ_s = 1)
  expected = 2.0 / SIG2 * np.mean([0.0625, 0.0875, 0.0925, 0.0775, 0.0625])
  assert dets.scores[0] == pytest.approx(expected)
  start, end = detections.to_seconds(dets, 0.64)
  assert (start[0], end[0]) == (pytest.approx(0.64), pytest.approx(2.25 * 0.64))


def test_cut_keeps_exactly_005():
  # T = 1: no interpolation, ψ = λ·σ(0) = λ/2.
  kept = localize({"rgb": output([0.1], [0.0], [0.9])}, cfg(stpn_upsample=3))
  assert (kept.starts.tolist(), (kept.ends + 1).tolist()) == ([0.0], [1.0])
  below = localize({"rgb": output([0.0999], [0.0], [0.9])}, cfg(stpn_upsample=3))
  assert len(below) == 0
  # The cut is a flag (--stpn_signal_threshold): ψ = 0.05 is cut at 0.06, kept at 0.05.
  assert len(localize({"rgb": output([0.1], [0.0], [0.9])},
                      cfg(stpn_upsample=3, stpn_signal_threshold=0.06))) == 0
  assert len(localize({"rgb": output([0.1], [0.0], [0.9])},
                      cfg(stpn_upsample=3, stpn_signal_threshold=0.05))) == 1


def test_classes_are_chosen_per_stream_above_01():
  # rgb keeps class 0 only, flow class 1 only; p = 0.1 exactly is not above 0.1.
  rgb = output(np.ones(4), np.zeros((4, 2)), [0.9, 0.1])
  flow = output(np.ones(4), np.zeros((4, 2)), [0.05, 0.8])
  dets = localize({"rgb": rgb, "flow": flow}, cfg(stpn_upsample=2))
  assert sorted(dets.classes.tolist()) == [0, 1]
  none = localize({"rgb": output(np.ones(4), np.zeros((4, 1)), [0.1])},
                               cfg(stpn_upsample=2))
  assert len(none) == 0  # no fallback to the most probable class


def two_streams(flow_attention):
  """rgb: λ = 1, T-CAM 1 → ψ = σ(1) everywhere; flow: T-CAM 0 (ψ = λ/2)."""
  rgb = output(np.ones(4), np.ones(4), [0.9])
  flow = output(flow_attention, np.zeros(4), [0.9])
  return {"rgb": rgb, "flow": flow}


def test_union_of_streams_and_mixed_scores():
  # flow λ = [0, 0, 0, 1] ×2 at indices clamp(-.25, .25, ..., 3.25) → λ = 0 ×5, .25, .75, 1:
  # ψ = λ/2 ≥ 0.05 on samples 5..7 → [2.5, 4). rgb: the whole video [0, 4).
  # Scores, θ = 0.7: rgb λ·(0.7·1 + 0.3·0) = 0.7; flow mean λ·(0.3·0 + 0.7·1) = 0.7·(2/3).
  # tIoU = 1.5/4 = 0.375 ≤ 0.5: both kept.
  dets = localize(two_streams([0, 0, 0, 1.0]), cfg(stpn_upsample=2, theta=0.7))
  got = sorted(zip(dets.starts, dets.ends + 1, dets.scores))
  assert len(got) == 2
  np.testing.assert_allclose(got, [(0.0, 4.0, 0.7), (2.5, 4.0, 0.7 * 2 / 3)])


def test_class_wise_nms_on_the_pooled_proposals():
  # flow λ = [0, 0, 1, 1]: λ upsampled 0, 0, 0, .25, .75, 1, 1, 1 → ψ ≥ 0.05 on
  # samples 3..7 = [1.5, 4), score 0.7·mean(.25, .75, 1, 1, 1) = 0.56; tIoU with
  # rgb's [0, 4) (score 0.7) is 2.5/4 = 0.625: suppressed at 0.5, kept at 0.7.
  streams = two_streams([0, 0, 1.0, 1.0])
  dets = localize(streams, cfg(stpn_upsample=2, theta=0.7))
  assert (dets.starts.tolist(), (dets.ends + 1).tolist()) == ([0.0], [4.0])
  assert dets.scores[0] == pytest.approx(0.7)
  loose = localize(streams, cfg(stpn_upsample=2, theta=0.7, nms_threshold=0.7))
  np.testing.assert_allclose(sorted(zip(loose.starts, loose.scores)),
                             [(0.0, 0.7), (1.5, 0.56)])


def test_auto_resolves_to_stpn_for_the_sigmoid_loss():
  assert C.LocalizeConfig().for_model("sigmoid").proposal_source == "stpn"
  assert C.LocalizeConfig().for_model("softmax").proposal_source == "attention"
