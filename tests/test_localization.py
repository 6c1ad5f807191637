"""Localization (SPEC §4) against slow, obvious references and a hand-built video."""

from absl.testing import parameterized
import numpy as np

from wtal_tf import config as C
from wtal_tf.localization import detections
from wtal_tf.localization import nms
from wtal_tf.localization import threshold_proposals
from wtal_tf.localization.localize import localize
from wtal_tf.localization.outputs import StreamOutput


def slow_runs(signal, thresholds):
  """Runs of signal > τ, frame by frame."""
  runs = set()
  for thr in thresholds:
    start = None
    for t, v in enumerate(list(signal) + [-np.inf]):
      if v > thr and start is None:
        start = t
      elif not v > thr and start is not None:
        runs.add((start, t - 1))
        start = None
  return runs


def slow_nms(segments, scores, threshold):
  order = sorted(range(len(scores)), key=lambda i: -scores[i])
  keep = []
  for i in order:
    s, e = segments[i]
    ok = True
    for j in keep:
      s2, e2 = segments[j]
      inter = max(0, min(e, e2) + 1 - max(s, s2))
      union = (e - s + 1) + (e2 - s2 + 1) - inter
      if inter / union > threshold:
        ok = False
        break
    if ok:
      keep.append(i)
  return keep


class LocalizationTest(parameterized.TestCase):

  @parameterized.parameters(range(8))
  def test_connected_components_match_reference(self, seed):
    rng = np.random.default_rng(seed)
    t = int(rng.integers(1, 60))
    signal = np.round(rng.random(t), 1)
    thresholds = C.LocalizeConfig().attention_thresholds
    _, starts, ends = threshold_proposals.unique_proposals(
        *threshold_proposals.connected_components(signal[None], thresholds))
    self.assertEqual(set(zip(starts.tolist(), ends.tolist())), slow_runs(signal, thresholds))

  def test_connected_components_edges(self):
    rows, s, e = threshold_proposals.connected_components(np.array([[1.0, 1.0, 0.0, 1.0]]), [0.5])
    self.assertEqual(list(zip(s, e)), [(0, 1), (3, 3)])
    _, s, e = threshold_proposals.connected_components(np.array([[0.7]]), [0.5, 0.8])
    self.assertEqual(list(zip(s, e)), [(0, 0)])

  def test_default_thresholds(self):
    thr = C.LocalizeConfig().attention_thresholds
    self.assertLen(thr, 21)
    self.assertEqual((thr[0], thr[1], thr[-1]), (0.0, 0.025, 0.5))

  @parameterized.parameters(range(8))
  def test_nms_matches_reference(self, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    starts = rng.integers(0, 50, n)
    ends = starts + rng.integers(0, 12, n)
    scores = rng.random(n)
    keep = nms.nms(starts, ends, scores, 0.5)
    self.assertEqual(keep.tolist(), slow_nms(list(zip(starts, ends)), scores, 0.5))

  def test_eq12_scores_on_hand_built_video(self):
    # T=4, C=2 (+ background). RGB attention/logits and flow attention/logits.
    rgb = StreamOutput(attention=np.array([0.2, 0.9, 0.8, 0.1]),
                       cas=np.array([[0, 1, 2], [0, 3, -1], [0, 5, 0], [0, 0, 0]], float),
                       class_probs=np.array([0.9, 0.05]))
    flow = StreamOutput(attention=np.array([0.0, 0.7, 0.9, 0.3]),
                        cas=np.array([[0, 2, 0], [0, 1, 1], [0, 3, 2], [0, 4, 4]], float),
                        class_probs=np.array([0.7, 0.1]))
    cfg = C.LocalizeConfig(attention_thresholds=(0.5,), proposal_source="attention")
    dets = localize({"rgb": rgb, "flow": flow}, cfg)
    # Fused λ̄ = [0.1, 0.8, 0.85, 0.2] -> one proposal [1, 2]; p = [0.8, 0.075]:
    # class 0 kept only. Eq 12 on [1, 2] for class 0 (column 1 of cas):
    t1 = 0.5 * 0.9 * 3 + 0.5 * 0.7 * 1
    t2 = 0.5 * 0.8 * 5 + 0.5 * 0.9 * 3
    self.assertEqual(dets.classes.tolist(), [0])
    self.assertEqual((dets.starts.tolist(), dets.ends.tolist()), ([1], [2]))
    self.assertAlmostEqual(dets.scores[0], (t1 + t2) / 2)

  def test_class_selection_fallback(self):
    self.assertEqual(detections.select_classes(np.array([0.05, 0.3, 0.2]), 0.1).tolist(), [1, 2])
    self.assertEqual(detections.select_classes(np.array([0.05, 0.08, 0.02]), 0.1).tolist(), [1])

  def test_interval_scores_match_loop(self):
    rng = np.random.default_rng(0)
    wcas = rng.normal(size=(30, 4))
    starts = rng.integers(0, 30, 50)
    ends = np.minimum(starts + rng.integers(0, 10, 50), 29)
    classes = rng.integers(0, 4, 50)
    got = threshold_proposals.interval_scores(wcas, starts, ends, classes)
    expected = [wcas[s:e + 1, c].mean() for s, e, c in zip(starts, ends, classes)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)

  def test_single_stream_weight_is_one(self):
    out = StreamOutput(np.array([0.9, 0.9]), np.array([[0, 2.0], [0, 4.0]]), np.array([1.0]))
    dets = localize({"rgb": out}, C.LocalizeConfig(proposal_source="attention"))
    self.assertEqual((dets.starts[0], dets.ends[0]), (0, 1))
    self.assertAlmostEqual(dets.scores[0], 0.9 * 3.0)

  def test_tcam_proposals(self):
    # Attention is flat, but the T-CAM of class 1 peaks on [2, 3].
    cas = np.zeros((6, 3))
    cas[:, 1:] = -5.0
    cas[2:4, 2] = 5.0
    out = StreamOutput(np.full(6, 1.0), cas, np.array([0.2, 0.8]))
    dets = localize({"rgb": out}, C.LocalizeConfig(proposal_source="tcam",
                                                                 attention_thresholds=(0.5,)))
    self.assertIn((1, 2, 3), set(zip(dets.classes, dets.starts, dets.ends)))
    flat = localize({"rgb": out}, C.LocalizeConfig(attention_thresholds=(0.5,),
                                                                proposal_source="attention"))
    self.assertEqual((flat.starts.tolist(), flat.ends.tolist()), ([0, 0], [5, 5]))

  @parameterized.parameters(("auto", "softmax", "attention"), ("auto", "sigmoid", "stpn"),
                            ("attention", "sigmoid", "attention"), ("tcam", "sigmoid", "tcam"),
                            ("stpn", "softmax", "stpn"))
  def test_proposal_source_for_model(self, flag, cls_loss, expected):
    self.assertEqual(C.LocalizeConfig(proposal_source=flag).for_model(cls_loss).proposal_source,
                     expected)

  def test_unresolved_auto_is_an_error(self):
    out = StreamOutput(np.array([0.9]), np.array([[0, 2.0]]), np.array([1.0]))
    with self.assertRaisesRegex(ValueError, "for_model"):
      localize({"rgb": out}, C.LocalizeConfig())

  def test_seconds_and_clipping(self):
    dets = detections.Detections(np.array([0, 0]), np.array([0, 10]), np.array([2, 12]),
                                   np.array([1.0, 0.5]))
    start, end = detections.to_seconds(dets, 16 / 25, duration=7.5)
    np.testing.assert_allclose(start, [0.0, 6.4])
    np.testing.assert_allclose(end, [3 * 0.64, 7.5])
