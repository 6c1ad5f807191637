"""Bad input gets one clear error naming the file and the problem (issue: reliability)."""

import dataclasses
import errno
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
from unittest import mock

import numpy as np
import pytest

from conftest import REPO, tiny_config, write_dataset
from wtal_tf import config as C
from wtal_tf import io_utils
from wtal_tf.data import datasets as data
from wtal_tf.evaluation import activitynet
from wtal_tf.evaluation import metrics as evaluation
from wtal_tf.training import trainer as training
from wtal_tf.errors import UserError, WriteError, first_few, reading


def load(root, **kw):
  return data.load_dataset(C.DataConfig(data_dir=str(root), **kw))


def feature(root, split, stream, name):
  return pathlib.Path(root, "features", split, stream, name + ".npy")


def edit_gt(root, fn):
  path = pathlib.Path(root, "gt.json")
  gt = json.loads(path.read_text())
  fn(gt["database"])
  path.write_text(json.dumps(gt))


def corrupt(path, how):
  if not isinstance(how, str):
    np.save(path, how)
  elif how == "missing":
    path.unlink()
  elif how == "empty file":
    path.write_bytes(b"")
  else:
    path.write_bytes(b"\x93NUMPY garbage that is not an array")


FEATURE_CASES = [
    ("missing", "feature file not found"),
    ("empty file", "cannot read as .npy"),
    ("garbage", "cannot read as .npy"),
    (np.ones((4, 4), np.int32), "expected floating-point features, got dtype int32"),
    (np.ones(4, np.float32), "expected a 2-D"),
    (np.ones((4, 4, 1), np.float32), "expected a 2-D"),
    (np.ones((0, 4), np.float32), "empty video (0 segments)"),
    (np.ones((4, 7), np.float32), "feature dimension 7, expected 4"),
    (np.array([[np.nan] * 4] * 4, np.float32), "16 NaN/inf values"),
    (np.array([[np.inf, 0, 0, 0]] * 4, np.float32), "4 NaN/inf values"),
    # float64 beyond float32's range: inf once read as float32 (it passed, then broke training)
    (np.array([[1e300, 0, 0, 0]] * 4), "4 NaN/inf values (as float32, which they are read as)"),
    (np.ones((9, 4), np.float32), "stream lengths differ"),
    (np.array([{"a": 1}], dtype=object), "cannot read as .npy"),
]


@pytest.mark.parametrize("how,message", FEATURE_CASES)
def test_bad_feature_file(good, how, message):
  path = feature(good, "train", "flow", "b")
  corrupt(path, how)
  with pytest.raises(UserError) as e:
    load(good)
  assert message in str(e.value)
  assert "b" in str(e.value) and ("flow" in str(e.value) or "stream" in str(e.value))


@pytest.mark.parametrize("how,message", FEATURE_CASES[:3])
def test_skip_invalid_videos(good, how, message, caplog):
  corrupt(feature(good, "train", "rgb", "b"), how)
  caplog.set_level("WARNING")
  ds = load(good, skip_invalid_videos=True)
  assert [v.name for v in ds.train] == ["a"]
  assert len(ds.skipped) == 1 and message in ds.skipped[0]
  # Said by the loader, so by every tool (localize, visualize, attention_stats said nothing).
  assert [r.getMessage() for r in caplog.records] == [f"skipped: {ds.skipped[0]}"]


def test_no_usable_test_video_stops_a_scoring_run_before_training(good, tmp_path):
  """Every test video skipped as invalid: train_eval trained, then said so; ablation and
  mv trained their first row, then failed with an AttributeError traceback."""
  from wtal_tf.experiments import ablation  # pylint: disable=import-outside-toplevel
  from wtal_tf.training import train_eval  # pylint: disable=import-outside-toplevel
  corrupt(feature(good, "test", "flow", "x"), "missing")
  cfg = tiny_config(good, tmp_path / "m", data={"skip_invalid_videos": True})
  message = (f"^{good / 'gt.json'}: no usable test videos in subset 'test' \\(each was "
             "skipped: the warnings above say why\\): nothing to evaluate$")
  with pytest.raises(UserError, match=message):
    train_eval.train_and_evaluate(cfg)
  with pytest.raises(UserError, match=message):
    ablation.run(cfg, 1, flagfile=lambda c: "")
  assert not (tmp_path / "m").exists() or not any((tmp_path / "m").rglob("*.index"))
  assert len(load(good, skip_invalid_videos=True).train) == 2  # (training alone can run)


def test_an_unannotated_test_set_is_localized_not_scored(tmp_path, caplog):
  """Found by a new user: test videos extracted without annotations gave a table of mAP
  0.00 (and 0 in TensorBoard and eval_history.json), where evaluate says there is nothing
  to score; the ablation trained for nothing."""
  from wtal_tf.experiments import ablation  # pylint: disable=import-outside-toplevel
  from wtal_tf.training import train_eval  # pylint: disable=import-outside-toplevel
  root = write_dataset(tmp_path / "d", {"a": (["A"], 4), "b": (["B"], 3)},
                       {"x": ([], 5), "y": ([], 6)}, classes=("A", "B"))
  cfg = tiny_config(root, tmp_path / "m", train={"model_dir": str(tmp_path / "m"),
                                                 "train_steps": 4, "eval_every": 2})
  (tmp_path / "m").mkdir()
  stale = tmp_path / "m" / "detections_test.eval.json"  # scores of earlier detections
  stale.write_text(json.dumps({**{k: 0 for k in ("tious", "mAP", "per_class_AP")},
                               "detections": str(tmp_path / "m" / "detections_test.json")}))
  caplog.set_level("WARNING")
  report = train_eval.train_and_evaluate(cfg)
  assert report == (f"detections: {tmp_path / 'm' / 'detections_test.json'}\n"
                    f"not scored: subset 'test' of {root / 'gt.json'} has no annotated instance")
  assert set(json.loads((tmp_path / "m" / "detections_test.json").read_text())["results"]) \
      == {"x", "y"}
  assert not stale.exists() and not (tmp_path / "m" / "eval_history.json").exists()
  assert f"{root / 'gt.json'}: no annotated instance in subset 'test': its videos are " \
         "localized at each evaluation, not scored" in caplog.text
  with pytest.raises(UserError, match=f"^{root / 'gt.json'}: no annotated instance in subset "
                                      r"'test' \(its 2 videos have none\): nothing to score"):
    ablation.run(cfg.replace(train={"model_dir": str(tmp_path / "ab")}), 1,
                 flagfile=lambda c: "")


def test_a_skipped_test_video_counts_as_one_without_detections(tmp_path):
  root = write_dataset(tmp_path / "d", {"a": (["A"], 4), "b": (["B"], 3)},
                       {"x": (["A"], 5), "y": (["A"], 6)}, classes=("A", "B"))
  corrupt(feature(root, "test", "flow", "y"), "missing")
  ds = load(root, skip_invalid_videos=True)
  assert [v.name for v in ds.test] == ["x"] and "y" in ds.skipped[0]
  assert sorted(ds.test_gt) == ["x", "y"]  # y's ground truth stays in scoring
  # A perfect detection of x's instance [0, 0.64] and nothing for y: class A has
  # 2 instances, 1 found at precision 1, so AP = recall 0.5 at every tIoU.
  results = {"x": [{"label": "A", "score": 0.9, "segment": [0.0, 0.64]}]}
  result = evaluation.score_results(ds.test_gt, results, (0.5, 0.9), known_labels={"A", "B"})
  np.testing.assert_allclose(result.mean_ap, [0.5, 0.5])
  # Found by an ActivityNet user: train_eval's and localize's detections left y out
  # (SPEC 5: every test video appears, even with an empty list).
  from wtal_tf.inference import batch  # pylint: disable=import-outside-toplevel
  from wtal_tf.training import train_eval  # pylint: disable=import-outside-toplevel
  cfg = tiny_config(root, tmp_path / "m", data={"skip_invalid_videos": True},
                    train={"train_steps": 2, "checkpoint_every": 1})
  train_eval.train_and_evaluate(cfg)
  written = json.loads((tmp_path / "m" / "detections_test.json").read_text())["results"]
  _, results, _ = batch.localize_to_file(cfg, str(tmp_path / "d.json"))
  assert written["y"] == results["y"] == [] and set(written) == set(results) == {"x", "y"}


def test_a_training_video_without_labels_names_the_ground_truth_and_the_way_out(good):
  """Found by a new user: `video 'b': training video without any label` named neither
  the file nor --skip_invalid_videos."""
  edit_gt(good, lambda db: db["b"].update(annotations=[]))
  with pytest.raises(UserError, match=re.escape(
      f"{good / 'gt.json'}: video 'b': training video (subset 'validation') without any "
      "label (--skip_invalid_videos leaves such videos out)")):
    load(good)
  assert [v.name for v in load(good, skip_invalid_videos=True).train] == ["a"]


GT_CASES = [
    (lambda db: db["a"]["annotations"].append({"label": "A", "segment": [-1, 2]}),
     "negative or reversed segment"),
    (lambda db: db["a"]["annotations"].append({"label": "A", "segment": [5, 2]}),
     "negative or reversed segment"),
    (lambda db: db["a"]["annotations"].append({"label": "A", "segment": ["x", 2]}),
     "not a number"),
    (lambda db: db["a"]["annotations"].append({"label": "A"}), "needs 'label' and 'segment'"),
    (lambda db: db["a"].pop("subset"), "missing or non-string 'subset'"),
    (lambda db: db["a"].update(duration=-3), "'duration' must be positive"),
]


@pytest.mark.parametrize("change,message", GT_CASES)
def test_bad_ground_truth(good, change, message):
  edit_gt(good, change)
  with pytest.raises(UserError) as e:
    load(good)
  assert message in str(e.value) and "gt.json" in str(e.value) and "'a'" in str(e.value)


def test_malformed_json(good):
  pathlib.Path(good, "gt.json").write_text('{"database": {"a": ')
  with pytest.raises(UserError, match="gt.json: not valid JSON"):
    load(good)


def test_duplicate_video_id(good):
  path = pathlib.Path(good, "gt.json")
  text = path.read_text()
  entry = json.dumps(json.loads(text)["database"]["a"])
  path.write_text(text.replace('"database": {', '"database": {"a": ' + entry + ", ", 1))
  with pytest.raises(UserError, match="duplicate key 'a'"):
    load(good)


def test_label_and_subset_slips_are_named(good, caplog):
  """Found by a new user: a label "Jump " became a class of its own, a test-only label (a
  typo) a class never trained, and videos of subset "Validation" were left out; all
  without a word."""
  edit_gt(good, lambda db: db["a"]["annotations"][0].update(label="A "))
  with pytest.raises(UserError, match=r"gt.json: video 'a': annotation 0: label 'A ' has "
                     r"spaces at its ends$"):
    load(good)
  edit_gt(good, lambda db: (db["a"]["annotations"][0].update(label="A"),
                            db["x"]["annotations"].append({"label": "B", "segment": [2, 3]}),
                            db["b"].update(subset="Validation")))
  caplog.set_level("WARNING")
  ds = load(good)
  assert [v.name for v in ds.train] == ["a"]  # b left out, x has B: never trained
  assert caplog.messages == [
      f"{good / 'gt.json'}: 1 videos have subset 'Validation', not 'validation': they are "
      "left out",
      f"{good / 'gt.json'}: labels of test videos that no training video has: ['B'] (a "
      "class the model never sees scores AP 0)"]
  # Numbered splits are not typos of each other (split1 vs split2, fold1 vs fold2).
  from wtal_tf.data import groundtruth  # pylint: disable=import-outside-toplevel
  caplog.clear()
  videos = {f"v{k}": groundtruth.GTVideo(f"v{k}", subset, None, ())
            for k, subset in enumerate(("split1", "split2", "fold1", "Split1"))}
  assert list(groundtruth.select_subset(videos, "split1", "gt.json")) == ["v0"]
  assert caplog.messages == ["gt.json: 1 videos have subset 'Split1', not 'split1': they are "
                             "left out"]


def test_missing_subset(good):
  with pytest.raises(UserError, match="no videos in subset 'training'.*'test', 'validation'"):
    load(good, train_subset="training")


def test_unknown_label_with_class_list(good, tmp_path):
  (tmp_path / "classes.txt").write_text("A\n")
  with pytest.raises(UserError, match=r"ground-truth labels not in the class list: \['B'\]"):
    load(good, class_list=str(tmp_path / "classes.txt"))


def test_text_files_that_cannot_be_read_are_named(good, tmp_path):
  """A class list, THUMOS14 annotation file or flagfile that is not UTF-8 (e.g. Latin-1
  from an old editor) was a UnicodeDecodeError traceback."""
  from wtal_tf.data import thumos14  # pylint: disable=import-outside-toplevel
  classes = tmp_path / "classes.txt"
  classes.write_bytes("A\nB\nCafé\n".encode("latin-1"))
  with pytest.raises(UserError, match=rf"^{classes}: not UTF-8 text \(byte 7: invalid "):
    load(good, class_list=str(classes))
  split = tmp_path / "test_annotations"
  split.mkdir()
  txt = split / "Diving_test.txt"
  txt.write_bytes("video_test_1  1.0 2.0\nvidéo 3.0 4.0\n".encode("latin-1"))
  with pytest.raises(UserError, match=rf"^{txt}: not UTF-8 text \(byte 25: "):
    thumos14.read_official({"test": str(split)})
  with pytest.raises(UserError, match=rf"^{tmp_path}: cannot read \(Is a directory\)$"):
    with reading(tmp_path):
      open(tmp_path, encoding="utf-8").read()


def test_synthetic_data_is_written_only_to_a_new_folder(tmp_path):
  from wtal_tf.data import synthetic  # pylint: disable=import-outside-toplevel
  cfg = synthetic.SyntheticConfig(num_train=1, num_test=1, num_micro=1, feature_dim=2)
  (tmp_path / "old").mkdir()
  (tmp_path / "old" / "mine.txt").write_text("kept")
  (tmp_path / "file").write_text("x")
  for generate in (synthetic.generate, synthetic.generate_microvideos):
    with pytest.raises(UserError, match=rf"^{tmp_path / 'old'}: already exists; remove it "):
      generate(cfg, str(tmp_path / "old"))
    with pytest.raises(UserError, match=rf"^{tmp_path / 'file' / 'd'}: cannot write the "
                       "dataset folder"):
      generate(cfg, str(tmp_path / "file" / "d"))
  assert (tmp_path / "old" / "mine.txt").read_text() == "kept"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "old"]


def test_missing_data_dir_explains_layout_in_one_line(tmp_path):
  with pytest.raises(UserError, match="data directory not found; expected DATA_DIR/gt.json") as e:
    load(tmp_path / "nope")
  assert "\n" not in str(e.value) and "--layout=wtalc" in str(e.value)
  with pytest.raises(UserError, match="^--data_dir is required: the dataset folder; expected"):
    load("")


def test_detections_with_unknown_label(good, tmp_path):
  det = tmp_path / "det.json"
  det.write_text(json.dumps({"results": {"x": [{"label": "Q", "score": 1, "segment": [0, 1]}]}}))
  with pytest.raises(UserError, match=r"det.json: .*unknown to the ground truth: \['Q'\]"):
    evaluation.evaluate_files(str(good / "gt.json"), str(det), "test", [0.5])


@pytest.mark.parametrize("results,message", [
    ({"x": [{"label": "A", "score": 1}]}, "needs 'label', 'score' and 'segment'"),
    ({"x": [{"label": "A", "score": "high", "segment": [0, 1]}]}, "must be numbers"),
    ({"x": [{"label": "A", "score": 1, "segment": [0]}]}, "segment must be [start, end]"),
    ({"x": [{"label": "A", "score": 1, "segment": "12"}]}, "segment must be [start, end]"),
    ({"x": [{"label": "A", "score": 1, "segment": [0, float("nan")]}]}, "non-finite"),
    ({"x": [{"label": "A", "score": 1, "segment": [0, 1]},
            {"label": "A", "score": 1, "segment": [9, 5]}]},
     "detection 1: reversed segment [9.0, 5.0] (end before start)"),
    ({"x": ["A"]}, "needs 'label', 'score' and 'segment'"),
    ({"x": {"label": "A"}}, "must be a list"),
])
def test_malformed_detections(results, message):
  with pytest.raises(UserError) as e:
    activitynet.parse_detections({"results": results}, "det.json")
  assert message in str(e.value) and "det.json" in str(e.value)


def test_unwritable_model_dir(good, tmp_path):
  locked = tmp_path / "locked"
  locked.mkdir()
  locked.chmod(0o500)
  try:
    if os.access(locked, os.W_OK):
      pytest.skip("running as a user that can write anywhere")
    with pytest.raises(UserError, match="not writable"):
      training.train(tiny_config(good, locked))
  finally:
    locked.chmod(0o700)


def test_model_dir_is_a_file(good, tmp_path):
  (tmp_path / "file").write_text("x")
  with pytest.raises(UserError, match="cannot create model dir"):
    training.train(tiny_config(good, tmp_path / "file" / "m"))


def run_cli(*args):
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
  return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=REPO,
                        env=env)


def test_cli_prints_one_line_without_traceback(tmp_path):
  proc = run_cli("wtal_tf.train", f"--data_dir={tmp_path / 'missing'}",
                 f"--model_dir={tmp_path / 'm'}")
  assert proc.returncode == 2
  assert "Traceback" not in proc.stderr
  assert f"error: {tmp_path / 'missing'}: data directory not found" in proc.stderr


def test_cli_localize_without_a_model(good, tmp_path):
  proc = run_cli("wtal_tf.localize", f"--data_dir={good}", f"--model_dir={tmp_path / 'empty'}")
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert "model.json: not found" in proc.stderr
  # A relative one names the folder it was looked for in (found by a user upgrading: an
  # older version's flags.cfg held relative paths, read from another folder).
  proc = run_cli("wtal_tf.localize", f"--data_dir={good}", "--model_dir=M1")
  assert proc.returncode == 2 and proc.stderr == (
      f"error: M1/model.json: not found (is M1, in {REPO}, a trained model dir?)\n")


def test_cli_rejects_bad_enum():
  proc = run_cli("wtal_tf.train", "--streams=rgb,depth")
  assert proc.returncode != 0 and "items must be from rgb,flow" in proc.stderr


def test_a_config_made_in_python_refuses_an_item_given_twice():
  """DataConfig(streams=("rgb", "rgb")) built two branches of one name: a Keras error
  about adding state to a built layer, at training. (Flags keep each choice once.)"""
  for cls, field, value in ((C.LossConfig, "losses", ("fg", "bg", "fg")),
                            (C.ExtractConfig, "streams", ("flow", "flow"))):
    with pytest.raises(ValueError, match=rf"^--{field}: '{value[-1]}' is given twice$"):
      cls(**{field: value})


def test_the_python_api_gives_seconds_of_the_models_time_base(good, tmp_path):
  """Found by an ActivityNet user: the README's detect_one example passed THUMOS14's
  0.64 s a segment, so a model of 8 fps features got detections at the wrong seconds;
  it passes predictor.seconds_per_segment, and gives what localize writes."""
  from wtal_tf.inference import batch  # pylint: disable=import-outside-toplevel
  from wtal_tf.inference.predictor import load_predictor  # pylint: disable=import-outside-toplevel
  cfg = tiny_config(good, tmp_path / "m", train={"train_steps": 2, "checkpoint_every": 1},
                    data={"feature_fps": 8.0})
  training.train(cfg)
  predictor = load_predictor(cfg.train.model_dir, C.LocalizeConfig())
  assert predictor.seconds_per_segment == 16 / 8.0
  _, results, dataset = batch.localize_to_file(cfg, str(tmp_path / "d.json"))
  video = dataset.test[0]
  mine, _, _ = batch.detect_one(predictor, video.load(predictor.streams), predictor.classes,
                                predictor.seconds_per_segment, video.duration)
  assert mine == results[video.name] and mine


def test_localizing_unlabelled_videos_takes_the_models_classes(tiny_model, good, tmp_path):
  from wtal_tf.inference import batch  # pylint: disable=import-outside-toplevel
  edit_gt(good, lambda db: [v.update(annotations=[]) for v in db.values()])
  with pytest.raises(UserError, match=r"gt.json: no labelled instances to take the class "
                     r"list from: pass --class_list=FILE"):
    load(good)
  path, results, dataset = batch.localize_to_file(tiny_model, str(tmp_path / "d.json"))
  assert dataset.classes == ("A", "B") and set(results) == {"x"}
  assert all(r["label"] in ("A", "B") for r in results["x"])
  from wtal_tf.inference import timelines  # pylint: disable=import-outside-toplevel
  assert timelines.draw(tiny_model, [tiny_model.train.model_dir], [], 1,
                        str(tmp_path / "pictures")) == [str(tmp_path / "pictures" / "x.png")]


def test_localize_removes_the_scores_of_the_detections_it_replaces(tiny_model, tmp_path,
                                                                   caplog):
  """Found by a new user: localizing again left the old detections' .eval.json beside the
  new detections."""
  from wtal_tf.evaluation import metrics  # pylint: disable=import-outside-toplevel
  from wtal_tf.inference import batch  # pylint: disable=import-outside-toplevel
  dets, scores = tmp_path / "d.json", tmp_path / "d.eval.json"
  batch.localize_to_file(tiny_model, str(dets))
  gt = str(pathlib.Path(tiny_model.data.data_dir) / "gt.json")
  metrics.evaluate_to_file(gt, str(dets), "test", (0.5,), (), show=lambda table: None)
  assert scores.is_file()
  caplog.set_level("WARNING")
  batch.localize_to_file(tiny_model, str(dets))
  assert not scores.exists() and f"{scores}: removed: the scores of the detections" in caplog.text
  scores.write_text(json.dumps({"database": {}}))  # not scores (e.g. a ground truth): kept
  batch.localize_to_file(tiny_model, str(dets))
  assert json.loads(scores.read_text()) == {"database": {}}


def test_localize_keeps_the_detections_a_models_run_scored_when_localizing_otherwise(
    tiny_model, tmp_path):
  """Found by a researcher: `localize --flagfile=RUN/flags.cfg --proposal_source=tcam`
  replaced the detections_test.json train_eval had written and scored for that run (and
  removed its scores); the file did not say how it was made."""
  from wtal_tf.inference import batch  # pylint: disable=import-outside-toplevel
  default = pathlib.Path(tiny_model.train.model_dir) / "detections_test.json"
  own = tiny_model.localize.for_model(tiny_model.loss.cls_loss)  # (auto: attention)
  batch.write_detections(tiny_model, {"x": []}, str(default), own, scored=True)
  made = json.loads(default.read_text())["external_data"]
  assert made["localize"] == {**json.loads(json.dumps(dataclasses.asdict(tiny_model.localize))),
                              "proposal_source": "attention"} and made["scored_by_its_run"]
  before = default.read_bytes()
  tcam = tiny_model.replace(localize={"proposal_source": "tcam", "nms_threshold": 0.4})
  with pytest.raises(UserError, match=rf"^{re.escape(str(default))}: holds the detections "
                     r"its model's run scored, made otherwise \(--nms_threshold=0.4 "
                     r"\(its 0.5\); --proposal_source=tcam \(its attention\)\): pass "
                     r"--output=FILE to write these elsewhere, or remove it first$"):
    batch.localize_to_file(tcam)
  assert default.read_bytes() == before
  batch.localize_to_file(tcam, str(tmp_path / "tcam.json"))  # elsewhere: written
  assert json.loads((tmp_path / "tcam.json").read_text())["external_data"] == {
      "model_dir": tiny_model.train.model_dir, "scored_by_its_run": False,
      "localize": {**made["localize"], "proposal_source": "tcam", "nms_threshold": 0.4},
      "data": {"data_dir": os.path.realpath(tiny_model.data.data_dir), "layout": "per_video",
               "gt_file": os.path.realpath(os.path.join(tiny_model.data.data_dir, "gt.json")),
               "test_subset": "test", "test_split": "test"}, "step": 2}
  # A setting another version did not record is not a difference (review).
  older = json.loads(before)
  del older["external_data"]["localize"]["stpn_upsample"]
  default.write_text(json.dumps(older))
  batch.localize_to_file(tiny_model)  # the same localization again: replaced
  assert not json.loads(default.read_text())["external_data"]["scored_by_its_run"]
  batch.localize_to_file(tcam)  # localize's own file (not scored by the run): replaced
  assert json.loads(default.read_text())["external_data"]["localize"]["proposal_source"] == (
      "tcam")


def test_localize_keeps_the_scored_detections_from_another_test_set_or_checkpoint(
    tiny_model, tmp_path, caplog):
  """Found by an ActivityNet user: `localize` with the run's flags and another --data_dir
  replaced the detections train_eval had scored (and their scores); and `localize` alike
  cleared their mark, after which any localization replaced them."""
  from wtal_tf.evaluation import metrics  # pylint: disable=import-outside-toplevel
  from wtal_tf.inference import batch  # pylint: disable=import-outside-toplevel
  model_dir = pathlib.Path(tiny_model.train.model_dir)
  default, scores = model_dir / "detections_test.json", model_dir / "detections_test.eval.json"
  own = tiny_model.localize.for_model(tiny_model.loss.cls_loss)
  _, results, _ = batch.localize_to_file(tiny_model, str(tmp_path / "d.json"))
  batch.write_detections(tiny_model, results, str(default), own, scored=True,  # (as train_eval)
                         data=batch.data_record(tiny_model.data), step=2)
  gt = str(pathlib.Path(tiny_model.data.data_dir) / "gt.json")
  metrics.evaluate_to_file(gt, str(default), "test", (0.5,), (), show=lambda table: None)
  before, scored = default.read_bytes(), scores.read_bytes()
  other = tmp_path / "other"
  shutil.copytree(tiny_model.data.data_dir, other)
  with pytest.raises(UserError, match=rf"made otherwise \(--data_dir={re.escape(str(other))} "
                     rf"\(its {re.escape(tiny_model.data.data_dir)}\); --gt_file="):
    batch.localize_to_file(tiny_model.replace(data={"data_dir": str(other)}))
  # Alike: written again, still the scored detections, their scores kept.
  caplog.set_level("WARNING")
  batch.localize_to_file(tiny_model)
  assert json.loads(default.read_text())["external_data"]["scored_by_its_run"] is True
  assert scores.read_bytes() == scored and "removed" not in caplog.text
  with pytest.raises(UserError, match="made otherwise"):
    batch.localize_to_file(tiny_model.replace(localize={"nms_threshold": 0.4}))
  # The same flags on features changed in place (review): other detections, not scored.
  x = pathlib.Path(tiny_model.data.data_dir, "features", "test", "rgb", "x.npy")
  kept_x = x.read_bytes()
  np.save(x, np.load(x) + 1.0)
  batch.localize_to_file(tiny_model)
  assert json.loads(default.read_text())["external_data"]["scored_by_its_run"] is False
  assert not scores.exists() and "removed" in caplog.text
  x.write_bytes(kept_x)
  batch.write_detections(tiny_model, results, str(default), own, scored=True,
                         data=batch.data_record(tiny_model.data), step=2)
  scores.write_bytes(scored)
  # A later checkpoint (training resumed, then killed before its final evaluation).
  training.train(tiny_model.replace(train={"train_steps": 3}))
  with pytest.raises(UserError, match=r"made otherwise \(the checkpoint of step 3 \(its step "
                     r"2\)\)"):
    batch.localize_to_file(tiny_model)
  assert scores.read_bytes() == scored and json.loads(default.read_bytes())["results"] == (
      json.loads(before)["results"])


def test_localize_keeps_scores_of_other_detections_it_finds_beside_its_output(
    tiny_model, tmp_path, caplog):
  """Found by a researcher: `evaluate --detections=stpn.json --output=mine.eval.json`,
  then `localize --output=mine.json` deleted mine.eval.json, the scores of STPN's
  detections (no mine.json had existed)."""
  from wtal_tf.evaluation import metrics  # pylint: disable=import-outside-toplevel
  from wtal_tf.inference import batch  # pylint: disable=import-outside-toplevel
  gt = str(pathlib.Path(tiny_model.data.data_dir) / "gt.json")
  theirs, mine, scores = tmp_path / "stpn.json", tmp_path / "mine.json", tmp_path / "mine.eval.json"
  batch.localize_to_file(tiny_model, str(theirs))
  metrics.evaluate_to_file(gt, str(theirs), "test", (0.5,), (), output=str(scores),
                           show=lambda table: None)
  written = scores.read_text()
  assert json.loads(written)["detections"] == str(theirs)
  caplog.set_level("WARNING")
  batch.localize_to_file(tiny_model, str(mine))
  assert scores.read_text() == written and "removed" not in caplog.text
  unnamed = {k: v for k, v in json.loads(written).items() if k != "detections"}
  scores.write_text(json.dumps(unnamed))  # written before scores named their detections
  batch.localize_to_file(tiny_model, str(mine))
  assert json.loads(scores.read_text()) == unnamed
  assert (f"{scores}: kept, but it may hold the scores of the detections this run replaced "
          "(it names no detections file)") in caplog.text
  moved = tmp_path / "moved"  # (review) a folder moved, its scores naming the old path
  moved.mkdir()
  batch.localize_to_file(tiny_model, str(moved / "mine.json"))
  metrics.evaluate_to_file(gt, str(moved / "mine.json"), "test", (0.5,), (),
                           show=lambda table: None)
  (moved / "mine.eval.json").write_text((moved / "mine.eval.json").read_text().replace(
      str(moved), str(tmp_path / "before")))
  batch.localize_to_file(tiny_model, str(moved / "mine.json"))
  assert (moved / "mine.eval.json").exists()
  assert (f"{moved / 'mine.eval.json'}: kept, but it may hold the scores of the detections "
          f"this run replaced (it names {tmp_path / 'before' / 'mine.json'}, which is not "
          "there)") in caplog.text
  link = tmp_path / "link"  # the same folder by another path: the scores are removed
  link.symlink_to(moved)
  metrics.evaluate_to_file(gt, str(moved / "mine.json"), "test", (0.5,), (),
                           show=lambda table: None)
  batch.localize_to_file(tiny_model, str(link / "mine.json"))
  assert not (moved / "mine.eval.json").exists()


def test_a_duration_that_disagrees_with_the_features_is_named(tiny_model, good, tmp_path,
                                                               caplog):
  """Found by a new user: a wrong duration in gt.json clipped most detections to zero length
  ([5.0, 5.0]), exit 0 and not a word."""
  from wtal_tf.inference import batch  # pylint: disable=import-outside-toplevel
  edit_gt(good, lambda db: db["x"].update(duration=1.0))  # x: 5 segments = 3.2 s
  caplog.set_level("WARNING")
  _, results, _ = batch.localize_to_file(tiny_model, str(tmp_path / "d.json"))
  assert (f"{good / 'gt.json'}: 1 of 1 videos have a duration that disagrees with their "
          "features (e.g. 'x': 1 s, but 5 segments = 3.2 s at --feature_fps=25 "
          "--segment_frames=16): detections are clipped to the duration; check the "
          "durations or --feature_fps") in caplog.text
  assert results["x"] and all(0 <= r["segment"][0] < r["segment"][1] <= 1.0
                              for r in results["x"])  # none of zero length
  caplog.clear()
  edit_gt(good, lambda db: db["x"].update(duration=3.0))  # within a segment or two: fine
  batch.localize_to_file(tiny_model, str(tmp_path / "d.json"))
  assert "disagrees" not in caplog.text


def test_a_stream_no_video_has_names_the_streams_there(good):
  """Found by a new user: RGB-only features read with the default --streams=rgb,flow said
  'feature file not found (--skip_invalid_videos leaves such videos out)', and that flag
  then gave 'no usable training videos'."""
  for split in ("train", "test"):
    shutil.rmtree(pathlib.Path(good, "features", split, "flow"))
  with pytest.raises(UserError, match=re.escape(
      f"{good / 'features' / 'train' / 'flow' / 'a.npy'}: not found: "
      f"{good / 'features' / 'train'} has no flow features, only rgb (--streams chooses) "
      "(--skip_invalid_videos leaves such videos out)")):
    load(good)
  assert len(load(good, streams=("rgb",)).train) == 2


def test_annotations_that_end_after_their_video_are_named(good, caplog):
  """Found by a new user: an instance annotated [0, 300] in a 31.6 s video (e.g. frames
  written as seconds) was scored without a word."""
  caplog.set_level("WARNING")
  load(good)
  assert "end after their video" not in caplog.text
  edit_gt(good, lambda db: db["x"]["annotations"].append({"label": "B", "segment": [1, 300]}))
  load(good)
  assert (f"{good / 'gt.json'}: 1 annotated instances of 1 test videos end after their video "
          "(e.g. 'x': B [1, 300] s, the video 3.2 s): segments are in seconds; no detection "
          "can match them") in caplog.text


def test_a_model_that_does_not_fit_the_data_is_one_line(tiny_model, tmp_path):
  from wtal_tf.inference import batch, timelines  # pylint: disable=import-outside-toplevel
  from wtal_tf.experiments import attention_stats  # pylint: disable=import-outside-toplevel
  with pytest.raises(UserError, match=r"--streams=rgb but the model in .*/m has streams "
                     r"rgb,flow: pass --streams=rgb,flow"):
    batch.localize_to_file(tiny_model.replace(data={"streams": ("rgb",)}))
  wider = write_dataset(tmp_path / "w", {"a": (["A"], 4), "b": (["B"], 3)},
                        {"x": (["A"], 5)}, classes=("A", "B"), d=6)
  other = tiny_model.replace(data={"data_dir": str(wider)})
  sizes = (r"/m: the model was trained on features of sizes \{'rgb': 4, 'flow': 4\}, but "
           r"the data has \{'rgb': 6, 'flow': 6\}")
  with pytest.raises(UserError, match=sizes):
    batch.localize_to_file(other)
  with pytest.raises(UserError, match=sizes):
    timelines.draw(other, [tiny_model.train.model_dir], [], 1, str(tmp_path / "pictures"))
  with pytest.raises(UserError, match=sizes):  # (it was a traceback from TensorFlow)
    attention_stats.report(other)
  # Another time base than training's: detections in the wrong seconds, exit 0 (found by
  # a new user: a model trained at --feature_fps=30 localized at the default 25).
  timing = re.escape(f"{tiny_model.train.model_dir}: the model was trained on features of "
                     "--feature_fps=25 --segment_frames=16, but these flags say "
                     "--feature_fps=30 --segment_frames=16: pass --feature_fps=25 "
                     "--segment_frames=16")
  with pytest.raises(UserError, match=f"^{timing}$"):
    batch.localize_to_file(tiny_model.replace(data={"feature_fps": 30.0}))
  with pytest.raises(UserError, match=re.escape(  # (each value as it reads back: 29.97 is
      "these flags say --feature_fps=29.97 --segment_frames=16: pass --feature_fps=25 ")):
    batch.localize_to_file(tiny_model.replace(data={"feature_fps": 29.97}))  # not 30000/1001)
  from wtal_tf.inference import predictor  # pylint: disable=import-outside-toplevel
  assert predictor._timing_flags({"feature_fps": 30000 / 1001, "segment_frames": 16}) == (  # pylint: disable=protected-access
      "--feature_fps=29.97002997002997 --segment_frames=16")
  with pytest.raises(UserError, match=f"^{timing}$"):
    timelines.draw(tiny_model.replace(data={"feature_fps": 30.0}),
                   [tiny_model.train.model_dir], [], 1, str(tmp_path / "pictures"))
  (tmp_path / "classes.txt").write_text("A\nB\nC\n")
  with pytest.raises(UserError, match=re.escape(
      "/m: the model was trained on 2 classes; the data has 3, 1 of them the model does not "
      f"have (C), in {tmp_path / 'classes.txt'}: the model's classes, in its order, are its "
      'model.json\'s "classes"')):
    batch.localize_to_file(tiny_model.replace(data={"class_list": str(tmp_path / "classes.txt")}))
  (tmp_path / "classes.txt").write_text("B\nA\n")
  with pytest.raises(UserError, match="the data has 2, in another order, in "):
    batch.localize_to_file(tiny_model.replace(data={"class_list": str(tmp_path / "classes.txt")}))


def test_a_test_set_without_some_of_the_models_classes_is_localized_with_them(tiny_model,
                                                                             tmp_path):
  """Found by an ActivityNet user: a ground truth of validation videos with 120 of the 200
  classes was a 5,799-character error listing both class lists; --class_list naming the
  model's classes gave the detections."""
  from wtal_tf.inference import batch  # pylint: disable=import-outside-toplevel
  gt = json.loads(pathlib.Path(tiny_model.data.data_dir, "gt.json").read_text())
  for entry in gt["database"].values():
    entry["annotations"] = [a for a in entry["annotations"] if a["label"] == "B"]
  (tmp_path / "gt_b.json").write_text(json.dumps(gt))
  _, results, dataset = batch.localize_to_file(
      tiny_model.replace(data={"gt_file": str(tmp_path / "gt_b.json")}), str(tmp_path / "b.json"))
  _, whole, _ = batch.localize_to_file(tiny_model, str(tmp_path / "all.json"))
  assert dataset.classes == ("A", "B") and results == whole


def test_a_damaged_model_dir_is_one_line_for_resuming_and_restoring(tiny_model):
  """Found by a new user: a truncated checkpoint gave tracebacks (IndexError); deleted
  files of the latest one made localize say there is no checkpoint."""
  from wtal_tf.modeling import checkpoints  # pylint: disable=import-outside-toplevel
  folder = pathlib.Path(tiny_model.train.model_dir, checkpoints.CHECKPOINT_DIR)
  data_file = next(folder.glob("ckpt-2.data-*"))
  data_file.write_bytes(data_file.read_bytes()[:10])
  broken = re.escape(f"{folder / 'ckpt-2'}: cannot restore checkpoint (")
  with pytest.raises(UserError, match=broken):
    checkpoints.restore(tiny_model.train.model_dir)
  with pytest.raises(UserError, match=broken):
    training.train(tiny_model.replace(train={"train_steps": 3}))
  for f in folder.glob("ckpt-2.*"):
    f.unlink()
  gone = re.escape(f"{folder / 'ckpt-2'}.index: not found, though {folder / 'checkpoint'} names "
                   "it the latest checkpoint")
  for call in (lambda: checkpoints.restore(tiny_model.train.model_dir),
               lambda: training.train(tiny_model.replace(train={"train_steps": 3}))):
    with pytest.raises(UserError, match=gone):
      call()


def test_visualize_names_a_video_skipped_as_invalid(tiny_model, good, tmp_path):
  from wtal_tf.inference import timelines  # pylint: disable=import-outside-toplevel
  corrupt(feature(good, "test", "rgb", "x"), "garbage")
  cfg = tiny_model.replace(data={"skip_invalid_videos": True})
  with pytest.raises(UserError, match=r"--videos: x is skipped as invalid"):
    timelines.draw(cfg, [cfg.train.model_dir], ["x"], 1, str(tmp_path / "pictures"))


def test_a_visualize_or_localize_that_fails_leaves_no_empty_output_folder(tiny_model, tmp_path,
                                                                         monkeypatch):
  """(Trial: a full disk) localize --save_outputs=DIR and visualize --output_dir=DIR left
  an empty DIR when they failed before writing in it; visualize did on any error too."""
  from wtal_tf.inference import batch  # pylint: disable=import-outside-toplevel
  from wtal_tf.inference import timelines  # pylint: disable=import-outside-toplevel
  with pytest.raises(UserError, match=r"--videos: not in the test subset"):
    timelines.draw(tiny_model, [tiny_model.train.model_dir], ["nope"], 1,
                   str(tmp_path / "new" / "pictures"))

  def full(path, *args):
    raise WriteError(errno.ENOSPC, "No space left on device", path)

  monkeypatch.setattr(batch, "save_outputs", full)
  with pytest.raises(UserError, match=r"x.npz: cannot write \(No space left on device\)"):
    batch.localize_to_file(tiny_model, str(tmp_path / "d.json"), str(tmp_path / "outputs"))
  assert not (tmp_path / "new").exists() and not (tmp_path / "outputs").exists()
  (tmp_path / "outputs").mkdir()  # (one that was there stays)
  with pytest.raises(UserError, match=r"No space left on device"):
    batch.localize_to_file(tiny_model, str(tmp_path / "d.json"), str(tmp_path / "outputs"))
  assert (tmp_path / "outputs").is_dir()


def test_an_output_over_a_file_the_command_reads_is_refused_before_any_work(
    tiny_model, good, tmp_path, monkeypatch):
  """Found by a new user: localize --output=DATA/gt.json replaced the ground truth with
  detections, evaluate --output=DETECTIONS replaced them with scores (exit 0)."""
  from wtal_tf.inference import batch  # pylint: disable=import-outside-toplevel
  model_dir = pathlib.Path(tiny_model.train.model_dir)
  before = {p: p.read_bytes() for p in (good / "gt.json", model_dir / "model.json")}
  for output, what in ((good / "gt.json", "ground truth of the dataset"),
                       (model_dir / "model.json", "model spec of --model_dir")):
    with pytest.raises(UserError, match=re.escape(
        f"{output}: cannot write the detections file (it is the {what})")):
      batch.localize_to_file(tiny_model, str(output))
  assert {p: p.read_bytes() for p in before} == before
  from wtal_tf.training import train_eval  # pylint: disable=import-outside-toplevel
  fresh = tiny_config(good, tmp_path / "fresh", train={"train_steps": 2})
  with pytest.raises(UserError, match=re.escape(f"{good / 'gt.json'}: cannot write the "
                                                "detections file (it is the ground truth")):
    train_eval.train_and_evaluate(fresh, str(good / "gt.json"))  # (./run.sh's path)
  assert not (tmp_path / "fresh").exists()  # refused before training
  assert {p: p.read_bytes() for p in before} == before
  monkeypatch.chdir(good)  # the same file by a relative path and through a link
  (tmp_path / "link.json").symlink_to(good / "gt.json")
  for same in ("gt.json", str(tmp_path / "link.json")):
    with pytest.raises(UserError, match="it is the ground truth of --gt"):
      io_utils.check_writable(same, "scores file", {str(good / "gt.json"): "ground truth of --gt"})
  io_utils.check_writable("other.json", "scores file", {str(good / "gt.json"): "ground truth"})
  dets = tmp_path / "dets.json"
  dets.write_text(json.dumps(activitynet.document({})))
  proc = run_cli("wtal_tf.evaluate", f"--gt={good / 'gt.json'}", f"--detections={dets}",
                 f"--output={dets}")
  assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
      f"error: {dets}: cannot write the scores file (it is the detections of --detections)"]
  assert json.loads(dets.read_text()) == activitynet.document({})


def test_the_model_under_another_keras_backend_is_one_line(tmp_path, monkeypatch):
  """KERAS_BACKEND=jax (set for extraction, which runs under JAX) reaches training as a
  one-line error, not a traceback from TensorFlow's checkpoint code."""
  import keras  # pylint: disable=import-outside-toplevel
  from wtal_tf.modeling import model  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
  with pytest.raises(UserError, match=r"^KERAS_BACKEND=jax: the localization model trains "
                     r"and runs on tensorflow only .*set it to tensorflow$"):
    model.WTALModel(2)
  data_dir = write_dataset(tmp_path / "d", {"a": (["A"], 4)}, {"x": (["A"], 5)},
                           classes=("A",))
  with pytest.raises(UserError, match="^KERAS_BACKEND=jax"):
    training.train(tiny_config(data_dir, tmp_path / "m", train={"train_steps": 1}))
  assert not (tmp_path / "m").exists()  # nothing written (the folder made for it removed)


def test_messages_name_the_first_few_and_count_the_rest():
  assert first_few([], 3) == ""
  assert first_few(["a", "b", "c"], 3) == "a, b, c"
  assert first_few(["a", "b", "c", "d", "e"], 3) == "a, b, c (+2 more)"
  assert first_few(("x", "y"), 1, "; ") == "x (+1 more)"


def test_a_bad_flagfile_is_one_short_line(tmp_path):
  proc = run_cli("wtal_tf.evaluate", f"--flagfile={tmp_path / 'absent.cfg'}")
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert proc.stderr.strip() == ("error: Unable to open flagfile: [Errno 2] No such file or "
                                 f"directory: '{tmp_path / 'absent.cfg'}'")
  not_flags = tmp_path / "gt.json"
  not_flags.write_text("\n".join(f'"video_{k}": {{"subset": "test", "annotations": []}},'
                                 for k in range(100)))
  proc = run_cli("wtal_tf.evaluate", f"--flagfile={not_flags}")
  assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
  first = '"video_0": {"subset": "test", "annotations": []},'
  assert proc.stderr.startswith(f"error: unexpected arguments '{first[:39]}…' '\"video_1\"")
  assert "and 97 more (flags are --name=value, also in a --flagfile)" in proc.stderr


def test_a_bad_flag_in_a_flagfile_names_the_flagfile(tmp_path, capsys):
  """A typo in a flagfile (nested ones too) is named with the file it is in; a flag set in
  several places is left to the message's value."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from wtal_tf import cli  # pylint: disable=import-outside-toplevel

  def error(*args):
    fv = flags.FlagValues()
    cli.define_flags(fv=fv)
    with pytest.raises(SystemExit) as e:
      cli.parse_flags(["train", *args], fv=fv)
    lines = capsys.readouterr().err.splitlines()
    assert e.value.code == 2 and len(lines) == 1, lines
    return lines[0]

  typo, value = tmp_path / "typo.cfg", tmp_path / "value.cfg"
  typo.write_text("# mine\n--lr=1e-3\n")
  value.write_text("--train_steps=abc\n")
  outer = tmp_path / "outer.cfg"
  outer.write_text(f"--seed=1\n--flagfile={typo}\n")
  fine = REPO / "flags" / "thumos14.cfg"
  assert error(f"--flagfile={fine}", f"--flagfile={typo}") == (
      f"error: {typo}: Unknown command line flag 'lr'")
  assert error(f"--flagfile={outer}") == f"error: {typo}: Unknown command line flag 'lr'"
  assert error("--flagfile", str(value)) == (
      f"error: {value}: flag --train_steps=abc: invalid literal for int() with base 10: 'abc'")
  latin = tmp_path / "latin.cfg"
  latin.write_bytes("--seed=1\n# café\n".encode("latin-1"))  # (it was a traceback)
  assert error(f"--flagfile={outer}", f"--flagfile={latin}") == (
      f"error: {latin}: not UTF-8 text (byte 14: invalid continuation byte)")
  assert error("--lr=1") == "error: Unknown command line flag 'lr'"  # the command line's
  assert error(f"--flagfile={value}", "--train_steps=5").startswith(
      "error: flag --train_steps=abc: ")  # set twice: the value tells which


def test_a_file_for_a_folder_and_a_folder_for_a_file_are_named(tmp_path):
  from wtal_tf.data import groundtruth  # pylint: disable=import-outside-toplevel
  from wtal_tf.modeling import checkpoints  # pylint: disable=import-outside-toplevel
  with pytest.raises(UserError, match=rf"^{tmp_path}: a folder, not a JSON file$"):
    groundtruth.load_json(str(tmp_path))
  spec = tmp_path / "model.json"
  spec.write_text("{}")
  with pytest.raises(UserError, match=r"^--model_dir=.*model.json: a file; give the folder "
                     r"training wrote \(it holds model.json and checkpoints/\)$"):
    checkpoints.read_spec(str(spec))
  # A model.json without a key the tools read (it was a KeyError traceback), or no object.
  model_dir = tmp_path / "m"
  model_dir.mkdir()
  for text in ('{"model": {}, "classes": ["A"]}', '[]', '{"model": {}, "classes": "A", '
               '"feature_dims": {}}'):
    (model_dir / "model.json").write_text(text)
    with pytest.raises(UserError, match=re.escape(
        f"{model_dir / 'model.json'}: unreadable model spec (expected a JSON object with "
        "model (dict), classes (list), feature_dims (dict))")):
      checkpoints.read_spec(str(model_dir))


def test_an_output_folder_below_a_file_is_one_line(tiny_model, tmp_path):
  """Found by a new user: visualize did the model work, then failed with a traceback;
  make_synthetic failed with one."""
  from wtal_tf.inference import timelines  # pylint: disable=import-outside-toplevel
  afile = tmp_path / "afile"
  afile.write_text("x")
  with pytest.raises(UserError, match=re.escape(f"{afile}: cannot create output dir")):
    with mock.patch.object(timelines, "load_predictor") as load:
      timelines.draw(tiny_model, [tiny_model.train.model_dir], [], 1, str(afile))
  load.assert_not_called()
  proc = run_cli("wtal_tf.tools.make_synthetic", f"--output_dir={afile / 'x'}")
  assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
      f"error: {afile / 'x'}: cannot write the dataset folder ({afile} is not a folder)"]


def test_proposal_thresholds_must_be_given_and_in_0_1():
  """Found by a new user: an empty --attention_thresholds, or 2, wrote no detections."""
  for taus in ((), (0.1, 2.0), (-0.1,)):
    with pytest.raises(ValueError, match=r"at least one threshold, each in \[0, 1\]"):
      C.LocalizeConfig(attention_thresholds=taus)
  assert C.LocalizeConfig(attention_thresholds=(0.0, 1.0)).attention_thresholds == (0.0, 1.0)


def test_ctrl_c_is_one_line_with_the_shells_status():
  code = ("import sys; from wtal_tf import cli\n"
          "def main(argv):\n  print('working', flush=True); raise KeyboardInterrupt\n"
          "cli.run(main)")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=120)
  assert proc.stdout == "working\n"
  assert (proc.returncode, proc.stderr) == (130, "error: interrupted\n")


# A `python -m wtal_tf.<verb>` process (startup.on_package_import with argv ["-m"]),
# told to print a line when it reaches the point where a Ctrl-C is sent.
LOADING = """
from wtal_tf import startup
startup.on_package_import(argv=["-m"])
print("loading", flush=True)
import tensorflow  # (quietly: fd 2 is a temporary file meanwhile)
import time
time.sleep(60)
"""
IGNORING = """
import time
from wtal_tf import cli, startup
startup.on_package_import(argv=["-m"])
def main(argv):
  print("working", flush=True)
  for _ in range(600):
    try:
      time.sleep(0.1)
    except KeyboardInterrupt:
      pass  # as a callback does that Python calls with the exception ignored (gc's)
cli.run(main)
"""


@pytest.mark.parametrize("code, at_most_s", [(LOADING, 4.0), (IGNORING, 30.0)])
def test_ctrl_c_ends_a_command_while_it_loads_or_when_its_exception_is_ignored(code,
                                                                              at_most_s):
  """Found by a new user: a Ctrl-C during the imports printed a KeyboardInterrupt
  traceback, and one raised where Python ignores it (a garbage collector's callback)
  let train and detect run to the end and exit 0."""
  proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, cwd=REPO)
  first = proc.stdout.readline()
  proc.send_signal(signal.SIGINT)
  started = time.monotonic()
  _, err = proc.communicate(timeout=120)
  assert first in ("loading\n", "working\n")
  assert (proc.returncode, err) == (130, "error: interrupted\n")
  assert time.monotonic() - started < at_most_s  # (the grace period is 5 s)


def test_the_processes_a_command_starts_for_its_work_keep_pythons_ctrl_c():
  """Found in review: Beam's worker processes (python -m wtal_tf.features.beam_worker)
  each printed `error: interrupted` and ended without unwinding; the weights installer
  left its partial download."""
  from wtal_tf import interrupts  # pylint: disable=import-outside-toplevel
  assert interrupts.command_module(["python", "-m", "wtal_tf.train", "--x"]) == "wtal_tf.train"
  assert interrupts.command_module(["python", "-c", "pass"]) == ""
  before = signal.getsignal(signal.SIGINT)
  for module in interrupts.NOT_COMMANDS:
    assert not interrupts.install(["python", "-m", module])
  assert signal.getsignal(signal.SIGINT) is before
  # Every module run with -m but not through cli.run is one of them (or prints a page).
  for path in sorted((REPO / "wtal_tf").rglob("*.py")):
    text = path.read_text()
    module = ".".join(path.relative_to(REPO).with_suffix("").parts)
    if 'if __name__ == "__main__":' in text and "cli.run(" not in text:
      assert module in (*interrupts.NOT_COMMANDS, "wtal_tf.tools.flags_table"), module


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_an_output_in_a_folder_that_refuses_files_is_refused_before_any_work(tmp_path):
  """Found by a new user: detect --output=/proc/x.json (a folder root may write to, by
  its permissions, that takes no file) extracted the whole video, then crashed with a
  traceback."""
  with pytest.raises(UserError, match=r"^/proc/x\.json: cannot write the detections file "
                                      r"\(/proc: No such file or directory\)$"):
    io_utils.check_writable("/proc/x.json", "detections file")
  io_utils.check_writable(tmp_path / "new" / "x.json", "detections file")
  assert list(tmp_path.iterdir()) == []  # (the probe file is gone)
