"""The evaluator against the benchmark's definition: published numbers, hand cases, a loop oracle."""

import json
import re

from absl.testing import parameterized
import numpy as np
import pytest

import pandas_eval
import reference_eval
from conftest import shared_path
from wtal_tf.evaluation import activitynet
from wtal_tf.evaluation import metrics as evaluation
from wtal_tf.data import groundtruth
from wtal_tf.errors import UserError

THUMOS_TIOUS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
STPN_PUBLISHED = [52.12, 44.20, 34.70, 26.06, 17.70, 10.09, 4.99, 1.34, 0.10]


def gt_of(database, subset="test"):
  return groundtruth.select_subset(groundtruth.parse_database(database, "gt"), subset, "gt")


def run(database, results, tious=(0.5,)):
  preds = activitynet.parse_detections({"results": results}, "dets")
  return evaluation.evaluate(gt_of(database), preds, tious)


def det(label, score, s, e):
  return {"label": label, "score": score, "segment": [s, e]}


def test_stpn_reference_reproduces_published_numbers():
  gt = groundtruth.select_subset(
      groundtruth.load_activitynet(str(shared_path("stpn_reference", "gt.json"))), "test", "gt")
  doc = json.loads(shared_path("stpn_reference", "results.json").read_text())
  result = evaluation.evaluate(gt, activitynet.parse_detections(doc, "results"), THUMOS_TIOUS)
  np.testing.assert_allclose(np.round(result.mean_ap * 100, 2), STPN_PUBLISHED, atol=1e-9)
  avg = result.averages([("a", 0.1, 0.7), ("b", 0.1, 0.9)])
  assert round(avg["a"] * 100, 2) == 27.12 and round(avg["b"] * 100, 2) == 21.25


def test_stpn_reference_matches_loop_oracle():
  gt_doc = json.loads(shared_path("stpn_reference", "gt.json").read_text())
  doc = json.loads(shared_path("stpn_reference", "results.json").read_text())
  expected, expected_ap, _ = reference_eval.mean_ap(gt_doc["database"], "test", doc["results"],
                                                    THUMOS_TIOUS)
  got = evaluation.evaluate(gt_of(gt_doc["database"]),
                            activitynet.parse_detections(doc, "r"), THUMOS_TIOUS)
  np.testing.assert_array_equal(got.ap, expected_ap)
  np.testing.assert_array_equal(got.mean_ap, expected)


DB = {"v1": {"subset": "test", "annotations": [{"label": "A", "segment": [0, 10]},
                                               {"label": "A", "segment": [20, 30]}]},
      "v2": {"subset": "test", "annotations": [{"label": "B", "segment": ["5.0", "9.0"]}]},
      "v3": {"subset": "train", "annotations": [{"label": "A", "segment": [0, 1]}]}}


class HandCases(parameterized.TestCase):

  def test_perfect(self):
    r = run(DB, {"v1": [det("A", 0.9, 0, 10), det("A", 0.8, 20, 30)], "v2": [det("B", 1, 5, 9)]})
    np.testing.assert_allclose(r.ap, [[1.0, 1.0]])

  def test_no_detections_score_zero(self):
    r = run(DB, {"v1": [], "v2": []})
    np.testing.assert_array_equal(r.ap, [[0.0, 0.0]])
    self.assertEqual(r.num_predictions, 0)

  def test_duplicate_is_false_positive(self):
    # TP, FP (same instance again), TP: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1.
    # Envelope: 1 on (0, 1/2], 2/3 on (1/2, 1] -> AP = 0.5 + 0.5 * 2/3.
    r = run(DB, {"v1": [det("A", 0.9, 0, 10), det("A", 0.8, 0, 10), det("A", 0.7, 20, 30)]})
    self.assertAlmostEqual(r.ap[0, 0], 0.5 + 0.5 * 2 / 3)
    self.assertEqual(r.ap[0, 1], 0.0)  # class B has ground truth but no predictions
    self.assertAlmostEqual(r.mean_ap[0], (0.5 + 0.5 * 2 / 3) / 2)

  def test_prediction_in_video_without_gt_of_its_class(self):
    # The top-scored A is in v2 (no A there): FP first, then two TPs.
    # precision 0, 1/2, 2/3 at recall 0, 1/2, 1 -> envelope 2/3 everywhere -> AP 2/3.
    r = run(DB, {"v2": [det("A", 0.95, 5, 9)],
                 "v1": [det("A", 0.9, 0, 10), det("A", 0.8, 20, 30)]})
    self.assertAlmostEqual(r.ap[0, 0], 2 / 3)

  def test_prediction_in_unknown_video_is_false_positive(self):
    r = run(DB, {"nope": [det("A", 0.99, 0, 10)], "v1": [det("A", 0.9, 0, 10)]})
    # FP then TP: precision 0, 1/2 at recall 0, 1/2 -> AP = 0.5 * 0.5.
    self.assertAlmostEqual(r.ap[0, 0], 0.25)

  def test_threshold_boundary_is_inclusive(self):
    # tIoU of [0, 5] with [0, 10] is exactly 0.5: a TP at 0.5, an FP at 0.6.
    r = run(DB, {"v1": [det("A", 0.9, 0, 5)]}, tious=(0.5, 0.6))
    self.assertAlmostEqual(r.ap[0, 0], 0.5)
    self.assertEqual(r.ap[1, 0], 0.0)

  def test_match_prefers_highest_tiou_unmatched(self):
    # One prediction overlapping both instances of A: matched to the higher-tIoU one.
    database = {"v": {"subset": "test", "annotations": [{"label": "A", "segment": [0, 10]},
                                                        {"label": "A", "segment": [4, 12]}]}}
    r = run(database, {"v": [det("A", 0.9, 4, 12), det("A", 0.8, 4, 11)]}, tious=(0.5,))
    # 1st matches [4,12] (tIoU 1); 2nd: [4,12] locked, [0,10] tIoU 6/11 >= 0.5 -> TP.
    self.assertAlmostEqual(r.ap[0, 0], 1.0)

  def test_score_ties_follow_numpy_argsort(self):
    results = {"v1": [det("A", 0.5, 0, 10), det("A", 0.5, 50, 60), det("A", 0.5, 20, 30)]}
    got = run(DB, results, tious=(0.5,))
    expected, _, _ = reference_eval.mean_ap(DB, "test", results, [0.5])
    np.testing.assert_array_equal(got.mean_ap, expected)

  def test_string_segments_and_missing_duration(self):
    r = run(DB, {"v2": [{"label": "B", "score": "0.5", "segment": ["5", "9"]}]})
    self.assertEqual(r.ap[0, 1], 1.0)

  def test_unknown_label_is_named(self):
    with self.assertRaisesRegex(UserError, "Zebra"):
      run(DB, {"v1": [det("Zebra", 0.9, 0, 10)]})

  def test_classes_without_gt_do_not_count(self):
    database = {"v": {"subset": "test", "annotations": [{"label": "A", "segment": [0, 10]}]},
                "w": {"subset": "train", "annotations": [{"label": "B", "segment": [0, 1]}]}}
    preds = activitynet.parse_detections({"results": {"v": [det("A", 1, 0, 10),
                                                          det("B", 1, 0, 10)]}}, "d")
    r = evaluation.evaluate(gt_of(database), preds, [0.5], known_labels={"A", "B"})
    self.assertEqual(r.classes, ("A",))
    self.assertEqual(r.mean_ap[0], 1.0)


@pytest.mark.parametrize("seed", range(6))
def test_random_against_loop_oracle(seed):
  rng = np.random.default_rng(seed)
  classes = ["A", "B", "C"]
  database, results = {}, {}
  for v in range(8):
    name = f"v{v}"
    anns = []
    for _ in range(rng.integers(0, 6)):
      s = float(rng.integers(0, 80))
      anns.append({"label": classes[rng.integers(3)], "segment": [s, s + float(rng.integers(1, 15))]})
    database[name] = {"subset": "test", "annotations": anns}
    dets = []
    for _ in range(rng.integers(0, 25)):
      s = float(rng.integers(0, 80))
      # coarse scores and segments make ties in scores and tIoUs frequent
      dets.append(det(classes[rng.integers(3)], float(rng.integers(0, 5)) / 4, s,
                      s + float(rng.integers(1, 15))))
    results[name] = dets
  # every seed must produce ground truth, or the comparison below would be vacuous
  assert sum(len(e["annotations"]) for e in database.values()) >= 5
  tious = [0.1, 0.3, 0.5, 0.7]
  expected, expected_ap, _ = reference_eval.mean_ap(database, "test", results, tious)
  got = run(database, results, tious)
  np.testing.assert_array_equal(got.ap, expected_ap)
  np.testing.assert_array_equal(got.mean_ap, expected)
  # the benchmark's pandas form of the loop is the same definition too
  np.testing.assert_array_equal(pandas_eval.mean_ap(database, "test", results, tious)[1],
                                expected_ap)


def test_format_table_has_averages():
  r = run(DB, {"v1": [det("A", 0.9, 0, 10)]}, tious=(0.1, 0.3, 0.5, 0.7))
  table = evaluation.format_table(r, [("avg 0.1:0.5", 0.1, 0.5)], per_class=True)
  assert "avg 0.1:0.5" in table and "A" in table.splitlines()[-2]
  assert table.splitlines()[3].split() == ["AP", "(%)", "at", "tIoU", "0.1", "0.3", "0.5", "0.7"]


def test_evaluate_cli_on_reference(tmp_path):
  import os
  import shutil
  import subprocess
  import sys
  from conftest import REPO
  gt = shared_path("stpn_reference", "gt.json")
  dets = tmp_path / "results.json"
  shutil.copy(shared_path("stpn_reference", "results.json"), dets)
  proc = subprocess.run([sys.executable, "-m", "wtal_tf.evaluate", f"--gt={gt}",
                         f"--detections={dets}", "--subset=test", "--per_class"],
                        capture_output=True, text=True, cwd=REPO,
                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert proc.returncode == 0, proc.stderr
  assert "52.12" in proc.stdout and "0.10" in proc.stdout and "avg 0.1:0.7" in proc.stdout
  assert "HammerThrow" in proc.stdout  # per-class rows
  numbers = json.loads((tmp_path / "results.eval.json").read_text())
  assert round(numbers["mAP"]["0.5"] * 100, 2) == 17.70
  assert round(numbers["averages"]["avg 0.1:0.7"] * 100, 2) == 27.12


def test_detections_of_videos_outside_the_subset_are_a_warning(tmp_path, caplog):
  gt = tmp_path / "gt.json"
  gt.write_text(json.dumps({"database": {
      "v1": {"subset": "test", "duration": 10, "annotations": [
          {"label": "A", "segment": [0, 2]}]},
      "v2": {"subset": "validation", "duration": 10, "annotations": []}}}))
  dets = tmp_path / "dets.json"
  results = {"v1": [det("A", 0.9, 0, 2)], "v2": [det("A", 0.8, 0, 2)], "zz": [det("A", 0.7, 0, 2)]}
  dets.write_text(json.dumps({"results": results}))
  caplog.set_level("WARNING")
  result = evaluation.evaluate_files(str(gt), str(dets), "test", (0.5,))
  assert result.mean_ap[0] == 1.0  # the two false positives rank below the true one
  assert (f"{dets}: 2 of the 3 videos with detections are not in subset 'test' of {gt} "
          "(e.g. v2): their detections count as false positives") in caplog.text
  dets.write_text(json.dumps({"results": {"v1": results["v1"]}}))
  caplog.clear()
  evaluation.evaluate_files(str(gt), str(dets), "test", (0.5,))
  assert "not in subset" not in caplog.text and "no entry" not in caplog.text


def test_subset_videos_without_an_entry_in_the_detections_are_a_warning(tmp_path, caplog):
  """Found by a researcher: detections of 209 THUMOS14 test videos scored against a
  ground truth of 212 gave lower numbers (3 videos' instances all missed), without a
  word; SPEC 5: every test video appears in the results, even with an empty list."""
  gt = tmp_path / "gt.json"
  gt.write_text(json.dumps({"database": {
      v: {"subset": "test", "duration": 10, "annotations": [{"label": "A", "segment": [0, 2]}]}
      for v in ("v1", "v2", "v3")}}))
  dets = tmp_path / "dets.json"
  dets.write_text(json.dumps({"results": {"v1": [det("A", 0.9, 0, 2)], "v2": []}}))
  caplog.set_level("WARNING")
  result = evaluation.evaluate_files(str(gt), str(dets), "test", (0.5,))
  assert result.mean_ap[0] == pytest.approx(1 / 3)  # v3's instance is missed, as v2's
  assert (f"{dets}: 1 of the 3 videos of subset 'test' of {gt} have no entry (e.g. v3): "
          "they count as videos without detections") in caplog.text


def test_scoring_at_other_thresholds_than_the_models_is_a_warning(tmp_path, caplog):
  """Found by an ActivityNet user: `evaluate --gt --detections` of a model evaluated at
  --tiou=activitynet scored at THUMOS14's default thresholds without a word."""
  gt = tmp_path / "gt.json"
  gt.write_text(json.dumps({"database": {"v1": {
      "subset": "test", "duration": 10, "annotations": [{"label": "A", "segment": [0, 2]}]}}}))
  model = tmp_path / "m"
  model.mkdir()
  (model / "flags.cfg").write_text("--learning_rate=0.001\n--tiou=activitynet\n")
  dets = tmp_path / "dets.json"
  dets.write_text(json.dumps({"results": {"v1": [det("A", 0.9, 0, 2)]},
                              "external_data": {"model_dir": str(model)}}))
  caplog.set_level("WARNING")
  evaluation.evaluate_files(str(gt), str(dets), "test", (0.5,), tiou="thumos14")
  assert (f"{dets}: its model was evaluated at --tiou=activitynet (its flags.cfg), these "
          "scores are at --tiou=thumos14: pass --tiou=activitynet to score it so") in caplog.text
  caplog.clear()  # the same thresholds (however written), or a flag chose: no warning
  evaluation.evaluate_files(str(gt), str(dets), "test", (0.5,), tiou="activitynet")
  evaluation.evaluate_files(str(gt), str(dets), "test", (0.5,))
  (model / "flags.cfg").write_text("--tiou=" + ",".join(f"0.{k}" for k in range(1, 10)))
  evaluation.evaluate_files(str(gt), str(dets), "test", (0.5,), tiou="thumos14")
  assert "its model was evaluated" not in caplog.text
  with pytest.raises(UserError, match=re.escape(  # (review: the flag that chooses it)
      "no videos in subset 'validation' (subsets present: ['test']): choose one with "
      "--subset")):
    evaluation.evaluate_files(str(gt), str(dets), "validation", (0.5,))


def test_a_subset_without_annotated_instances_is_named_as_such(tmp_path):
  """Found by a new user: test videos extracted without --annotations gave 'detections
  have labels unknown to the ground truth', blaming the detections."""
  gt = tmp_path / "gt.json"
  gt.write_text(json.dumps({"database": {
      "v1": {"subset": "test", "duration": 10, "annotations": []},
      "v2": {"subset": "validation", "duration": 10, "annotations": [
          {"label": "A", "segment": [0, 2]}]}}}))
  dets = tmp_path / "dets.json"
  dets.write_text(json.dumps({"results": {"v1": [det("A", 0.9, 0, 2)]}}))
  with pytest.raises(UserError, match=re.escape(
      f"{gt}: no annotated instance in subset 'test' (its 1 videos have none): nothing to "
      "score against")):
    evaluation.evaluate_files(str(gt), str(dets), "test", (0.5,))


def test_tiou_specs():
  """Found by a new user: --tiou=0.5,0.3,0.5 printed a column twice; --tiou= said the
  thresholds must be in (0, 1]."""
  from wtal_tf import config as C  # pylint: disable=import-outside-toplevel
  assert C.parse_tious("0.5,0.3") == (0.5, 0.3)
  assert C.parse_tious("thumos14") == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
  for spec, problem in (("0.5,0.3,0.5", "a threshold given twice"),
                        ("", "give activitynet or thumos14 or at least one threshold"),
                        ("0,0.5", r"thresholds must be in \(0, 1\]"),
                        ("x", "expected")):
    with pytest.raises(ValueError, match=f"^--tiou='{spec}': {problem}"):
      C.parse_tious(spec)
