"""Readers for both layouts, the THUMOS14 converter, and the training order."""

import json
import os
import re
import shutil

import numpy as np
import pytest

from conftest import shared_path, write_dataset, write_video
from wtal_tf import config as C
from wtal_tf import contract
from wtal_tf.data import datasets as data
from wtal_tf.data import groundtruth
from wtal_tf.training import input_pipeline
from wtal_tf.data import thumos14
from wtal_tf.errors import UserError

ANN = ("thumos14", "sujoyp_wtalc-pytorch", "Thumos14reduced-Annotations")


def test_per_video_layout(tmp_path):
  root = write_dataset(tmp_path, {"a": (["B", "A"], 5), "b": (["C"], 2)}, {"x": (["A"], 3)})
  ds = data.load_dataset(C.DataConfig(data_dir=str(root)))
  assert ds.classes == ("A", "B", "C")
  assert [(v.name, v.labels, v.num_segments) for v in ds.train] == [("a", (0, 1), 5),
                                                                     ("b", (2,), 2)]
  assert ds.feature_dims == {"rgb": 4, "flow": 4}
  assert list(ds.test_gt) == ["x"] and ds.test[0].duration == pytest.approx(3 * 0.64)
  x = ds.train[0].load(("rgb",))["rgb"]
  assert x.dtype == np.float32 and x.shape == (5, 4)


def test_class_list_file_fixes_order(tmp_path):
  root = write_dataset(tmp_path, {"a": (["A"], 2), "b": (["B"], 2)}, {"x": (["A"], 2)},
                       classes=("A", "B"))
  (tmp_path / "classes.txt").write_text("B\nA\nZ\n")
  ds = data.load_dataset(C.DataConfig(data_dir=str(root), class_list=str(tmp_path / "classes.txt")))
  assert ds.classes == ("B", "A", "Z") and ds.train[0].labels == (1,)
  # Found by a user: a byte-order mark (Windows editors) became part of the first name
  (tmp_path / "classes.txt").write_text("\ufeffB\nA\n", encoding="utf-8")
  ds = data.load_dataset(C.DataConfig(data_dir=str(root), class_list=str(tmp_path / "classes.txt")))
  assert ds.classes == ("B", "A")


def test_wtalc_layout_on_real_annotations(tmp_path):
  ann = shared_path(*ANN)
  names = [n.decode() for n in np.load(ann / "videoname.npy", allow_pickle=True)]
  duration = np.load(ann / "duration.npy", allow_pickle=True).reshape(-1)
  lengths = [max(1, int(d * 25 / 16)) for d in duration]
  rng = np.random.default_rng(0)
  joint = np.empty(len(names), dtype=object)
  for k, t in enumerate(lengths):
    joint[k] = rng.random((t, 6)).astype(np.float32)
  np.save(tmp_path / data.WTALC_FEATURES, joint, allow_pickle=True)
  shutil.copytree(ann, tmp_path / data.WTALC_ANNOTATIONS)
  ds = data.load_dataset(C.DataConfig(data_dir=str(tmp_path), layout="wtalc"))
  assert len(ds.classes) == 20 and ds.classes == tuple(sorted(ds.classes))
  assert len(ds.train) == 200 and len(ds.test) == 212
  assert ds.feature_dims == {"rgb": 3, "flow": 3}
  assert [v.num_segments for v in ds.train + ds.test] == lengths
  # Video labels are the set of instance labels (labels.npy), as for layout (a);
  # W-TALC's labels_all.npy disagrees with its own instances on 28 videos.
  instance_labels = np.load(ann / "labels.npy", allow_pickle=True)
  assert [tuple(ds.classes[i] for i in v.labels) for v in ds.train] == [
      tuple(sorted(set(l))) for l in instance_labels[:200]]
  x = ds.test[0].load(("rgb", "flow"))
  np.testing.assert_array_equal(np.concatenate([x["rgb"], x["flow"]], 1), joint[200])
  assert sum(len(v.instances) for v in ds.test_gt.values()) == 3358


def test_um_gt_json_with_train_test_subsets(tmp_path):
  gt = json.loads(shared_path("thumos14", "leftthomas_UM", "gt.json").read_text())
  shutil.copy(shared_path("thumos14", "leftthomas_UM", "gt.json"), tmp_path / "gt.json")
  rng = np.random.default_rng(0)
  for name, entry in gt["database"].items():
    t = int(rng.integers(1, 20))
    write_video(tmp_path, entry["subset"], name,
                {s: rng.random((t, 2)).astype(np.float32) for s in ("rgb", "flow")})
  ds = data.load_dataset(C.DataConfig(data_dir=str(tmp_path), train_subset="train"))
  assert len(ds.train) == 200 and len(ds.test) == 210 and len(ds.classes) == 20
  assert sum(len(v.instances) for v in ds.test_gt.values()) == 3311
  assert all(v.duration is None for v in ds.test)


def test_a_layout_error_names_the_flag_to_add(tmp_path):
  """Found by a researcher: UM's gt.json (subsets train/test) without --train_subset, and
  W-TALC's files without --layout=wtalc, gave errors that did not say what to add."""
  root = write_dataset(tmp_path / "um", {"a": (["A"], 4)}, {"x": (["A"], 5)}, classes=("A",),
                       train_subset="train")
  with pytest.raises(UserError, match=re.escape(
      f"{root / 'gt.json'}: no videos in subset 'validation' (subsets present: ['test', "
      "'train']): choose one with --train_subset")):
    data.load_dataset(C.DataConfig(data_dir=str(root)))
  (root / "features" / "train").rename(root / "features" / "training")  # (an ActivityNet user)
  for skip in (False, True):  # (review: not a video to skip, nor that advice)
    with pytest.raises(UserError, match=re.escape(
        f"{root / 'features' / 'train' / 'rgb' / 'a.npy'}: not found: {root / 'features'} "
        "has no train folder, only test,training (--train_split and --test_split choose)")
        + "$"):
      data.load_dataset(C.DataConfig(data_dir=str(root), train_subset="train",
                                     skip_invalid_videos=skip))
  with pytest.raises(UserError, match=re.escape(  # (found by a user of extract to S3)
      "s3://lab/ds: training and localization read a dataset on a local disk: copy it to "
      "one first")):
    data.load_dataset(C.DataConfig(data_dir="s3://lab/ds"))
  wtalc = tmp_path / "wtalc"
  (wtalc / data.WTALC_ANNOTATIONS).mkdir(parents=True)
  with pytest.raises(UserError, match=re.escape(
      f"{wtalc / 'gt.json'}: file not found; {wtalc} holds W-TALC's "
      f"{data.WTALC_ANNOTATIONS}/: add --layout=wtalc")):
    data.load_dataset(C.DataConfig(data_dir=str(wtalc)))


def _instances(videos):
  return {k: (v.subset, [(i.label, i.start, i.end) for i in v.instances]) for k, v in videos.items()}


def test_converter_reproduces_normalised_gt(caplog):
  mm = shared_path("thumos14", "makecent_mmtad")
  caplog.set_level("INFO")
  got = thumos14.read_official({"validation": str(mm / "annotations_val"),
                                "test": str(mm / "annotations_test")},
                               str(mm / "TH14_video_info.json"))
  ref = groundtruth.load_activitynet(str(shared_path("thumos14", "thumos14_gt.json")))
  assert _instances(got) == _instances(ref)
  assert {k: v.duration for k, v in got.items()} == {k: v.duration for k, v in ref.items()}
  # the one test video annotated only as Ambiguous is left out, and said so
  assert ("1 videos whose only instances are Ambiguous are left out (e.g. "
          "video_test_0001292)") in caplog.text


def test_converter_cli_210_convention(tmp_path):
  import subprocess
  import sys
  mm = shared_path("thumos14", "makecent_mmtad")
  out = tmp_path / "gt.json"
  subprocess.run([sys.executable, "-m", "wtal_tf.tools.thumos14_to_json",
                  f"--val_annotations={mm / 'annotations_val'}",
                  f"--test_annotations={mm / 'annotations_test'}", "--wtal_standard",
                  f"--output={out}"], check=True, capture_output=True)
  got = groundtruth.load_activitynet(str(out))
  ref = groundtruth.load_activitynet(str(shared_path("thumos14", "leftthomas_UM", "gt.json")))
  as_set = lambda vs: {(k, {"validation": "train"}.get(v.subset, v.subset), i) for k, v in vs.items()
                       for i in v.instances}
  assert len([v for v in got.values() if v.subset == "test"]) == 210
  assert as_set(got) == as_set(ref)


@pytest.mark.parametrize("start", [0, 3, 7, 10, 26])
def test_training_order_resumes_exactly(start):
  full = input_pipeline.training_order(10, 0, 1.0, seed=5, start_step=0, num_steps=30)
  resumed = input_pipeline.training_order(10, 0, 1.0, 5, start, 30 - start)
  assert np.array_equal(resumed, full[start:])
  for epoch in range(3):
    assert sorted(full[epoch * 10:(epoch + 1) * 10]) == list(range(10))  # each video once an epoch
  assert not np.array_equal(full[:10], full[10:20])  # reshuffled each epoch


def test_training_order_with_extra_videos():
  order = input_pipeline.training_order(6, 4, 2.0, seed=0, start_step=0, num_steps=14 * 3)
  for epoch in range(3):
    counts = np.bincount(order[epoch * 14:(epoch + 1) * 14], minlength=10)
    assert list(counts[:6]) == [1] * 6 and list(counts[6:]) == [2] * 4
  half = input_pipeline.training_order(6, 4, 0.5, seed=0, start_step=0, num_steps=8)
  assert (half >= 6).sum() == 2


def test_make_synthetic_cli(tmp_path):
  import subprocess
  import sys
  from conftest import REPO
  out = tmp_path / "syn"
  cmd = [sys.executable, "-m", "wtal_tf.tools.make_synthetic", f"--output_dir={out}",
         "--num_train_videos=3", "--num_test_videos=2", "--feature_dim=4", "--seed=7"]
  subprocess.run(cmd, check=True, cwd=REPO, capture_output=True)
  ds = data.load_dataset(C.DataConfig(data_dir=str(out)))
  assert len(ds.train) == 3 and len(ds.test) == 2 and ds.feature_dims == {"rgb": 4, "flow": 4}
  assert len(ds.classes) <= 20
  again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
  assert again.returncode == 2 and "already exists" in again.stderr
  assert sorted(p.name for p in tmp_path.iterdir()) == ["syn"]  # no partial dirs left


def test_converter_refuses_rows_that_are_not_segments_and_a_lost_class_file(tmp_path):
  """Found by a new user: such rows were converted (exit 0) into a gt.json that the
  loaders then refused; a byte-order mark became part of a video's name; a class file
  missing from one subset dropped its instances without a word."""
  splits = {"validation": tmp_path / "val", "test": tmp_path / "test"}
  for subset, folder in splits.items():
    folder.mkdir()
    for label in ("Diving", "Billiards"):
      (folder / f"{label}{thumos14.SUFFIX[subset]}").write_text(f"video_{subset}_1 1.0 2.5\n")
  diving = splits["validation"] / "Diving_val.txt"
  for row in ("video_validation_2 9.0 5.0", "video_validation_2 -3.0 5.0",
              "video_validation_2 nan 5.0", "video_validation_2 1.0 inf"):
    diving.write_text(f"video_validation_1 1.0 2.5\n{row}\n")
    with pytest.raises(UserError, match=re.escape(
        f"{diving}: line 2: start {row.split()[1]} and end {row.split()[2]} are not a segment")):
      thumos14.read_official({k: str(v) for k, v in splits.items()})
  diving.write_bytes(b"\xef\xbb\xbfvideo_validation_1 1.0 2.5\r\n")  # a BOM, Windows lines
  got = thumos14.read_official({k: str(v) for k, v in splits.items()})
  assert sorted(got) == ["video_test_1", "video_validation_1"]
  assert len(got["video_validation_1"].instances) == 2
  (splits["test"] / "Billiards_test.txt").unlink()
  with pytest.raises(UserError, match=re.escape(
      f"{splits['test']}: no Billiards_test.txt, which {splits['validation']} has as "
      "Billiards_val.txt")):
    thumos14.read_official({k: str(v) for k, v in splits.items()})


def test_converter_refuses_bad_video_info_and_unwritable_output(tmp_path):
  import subprocess
  import sys
  from conftest import REPO
  splits = {}
  for subset, split, video in (("validation", "val", "video_validation_1"),
                               ("test", "test", "video_test_1")):
    folder = tmp_path / split
    folder.mkdir()
    (folder / f"Diving_{split}.txt").write_text(f"{video} 1.0 2.5\n")
    splits[subset] = str(folder)
  info = tmp_path / "info.json"
  info.write_text(json.dumps({"video_test_1": {"duration": 9.5},
                              "video_validation_1": {"duration": "abc"}}))
  with pytest.raises(UserError, match=r"info.json: video_validation_1: duration 'abc' is not a "
                     r"positive number of seconds$"):
    thumos14.read_official(splits, str(info))
  info.write_text(json.dumps({"database": {"video_test_1": {"duration": 9.5}}}))
  with pytest.raises(UserError, match=r"info.json: none of its keys is an annotated video"):
    thumos14.read_official(splits, str(info))
  with pytest.raises(UserError, match=r"info.json: a file, not the folder of <Class>_val.txt "
                     r"annotation files$"):
    thumos14.read_official({**splits, "validation": str(info)})
  info.write_text(json.dumps({"video_test_1": {"duration": 9.5}}))  # partial: one duration
  got = thumos14.read_official(splits, str(info))
  assert got["video_test_1"].duration == 9.5 and got["video_validation_1"].duration is None
  convert = lambda *extra: subprocess.run(
      [sys.executable, "-m", "wtal_tf.tools.thumos14_to_json",
       f"--val_annotations={splits['validation']}", f"--test_annotations={splits['test']}",
       *extra], cwd=REPO, capture_output=True, text=True)
  proc = convert(f"--output={tmp_path}")
  assert proc.returncode == 2 and proc.stderr.strip() == (
      f"error: {tmp_path}: cannot write the ground-truth file (it is a folder)")
  proc = convert(f"--output={tmp_path / 'gt.json'}", f"--video_info={info}")
  assert proc.returncode == 0 and proc.stderr.strip() == (  # found by a new user: silent
      f"warning: {info}: no duration for 1 of 2 videos (e.g. video_validation_1): their "
      "detections are not clipped to the video's end")
  # Found in review: an --output naming an input replaced it with the ground truth.
  before = info.read_bytes()
  with pytest.raises(UserError, match=r"info.json: cannot write the ground-truth file \(it "
                     r"is the durations file of --video_info\)$"):
    thumos14.convert(splits, str(info), str(info))
  annotations = os.path.join(splits["validation"], sorted(os.listdir(splits["validation"]))[0])
  with pytest.raises(UserError, match=r"cannot write the ground-truth file \(it is the "
                     r"validation annotation file .*_val.txt\)$"):
    thumos14.convert(splits, annotations)
  assert info.read_bytes() == before


def test_features_made_only_when_every_video_read_has_a_record_and_they_agree(tmp_path,
                                                                              caplog):
  """What a model records of how its training features were made (model.json), and the
  warning when a dataset's videos were made otherwise than each other."""
  root = write_dataset(tmp_path / "d", {"a": (["A"], 4), "b": (["B"], 3)}, {"x": (["A"], 5)},
                       classes=("A", "B"))

  def record(split, name, crop):
    path = root / contract.STATUS_DIR / split / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"provenance": {
        "crop_size": crop, "flow_engine": "opencv",
        "streams": {"rgb": "random:0", "flow": "random:0"}}}))

  load = lambda **kw: data.load_dataset(C.DataConfig(data_dir=str(root), **kw))
  record("test", "x", 56)  # the test video only (found in review: it stood for all)
  assert load().features_made is None
  assert load(streams=("rgb",)).features_made is None
  tested = data.load_dataset(C.DataConfig(data_dir=str(root), streams=("rgb",)),
                             include_train=False).features_made
  assert tested == {"crop_size": 56, "streams": {"rgb": "random:0"}}  # (flow's own left out)
  for name in ("a", "b"):
    record("train", name, 224)
  caplog.set_level("WARNING")
  assert load().features_made == {"crop_size": 224, "flow_engine": "opencv",
                                  "streams": {"rgb": "random:0", "flow": "random:0"}}
  assert ("made in 2 ways by wtal_tf.extract: 2 videos (e.g. a) and 1 (e.g. x) differ "
          "(crop_size 224 vs 56)") in caplog.text
  caplog.clear()
  record("test", "x", 224)
  assert load().features_made["crop_size"] == 224 and "made in" not in caplog.text


@pytest.mark.parametrize("skip", [False, True])
def test_feature_files_named_with_the_v_prefix_the_ground_truth_lacks_are_named(tmp_path, skip):
  """Found by an ActivityNet user: gt.json keys without `v_`, feature files with it: every
  file 'not found', and with --skip_invalid_videos 'no usable training videos' and nothing
  more."""
  root = write_dataset(tmp_path / "d", {"a": (["A"], 4), "b": (["B"], 3)}, {"x": (["A"], 5)},
                       classes=("A", "B"))
  for p in list((root / "features").rglob("*.npy")):
    if p.stem != "b":  # (a mix: one video's files named as the ground truth names it)
      p.rename(p.with_name("v_" + p.name))
  with pytest.raises(UserError, match=re.escape(
      f"{root / 'features/train/rgb/a.npy'}: not found, but "
      f"{root / 'features/train/rgb/v_a.npy'} is: the ground truth names the video 'a', its "
      "feature file 'v_a': rename")):
    data.load_dataset(C.DataConfig(data_dir=str(root), skip_invalid_videos=skip))


def test_no_usable_training_videos_says_why_they_were_skipped(tmp_path):
  root = write_dataset(tmp_path / "d", {"a": (["A"], 4), "b": (["B"], 3)}, {"x": (["A"], 5)},
                       classes=("A", "B"))
  for p in (root / "features" / "train").rglob("*.npy"):
    p.unlink()
  (root / "features" / "train" / "rgb" / "other.npy").write_bytes(b"")  # (the split is there)
  with pytest.raises(UserError, match=re.escape(
      f"{root / 'gt.json'}: no usable training videos in subset 'validation': each of its 2 "
      f"was skipped (e.g. {root / 'features/train/rgb/a.npy'}: feature file not found")):
    data.load_dataset(C.DataConfig(data_dir=str(root), skip_invalid_videos=True))
