"""End to end from raw videos: extract (Beam) -> train -> localize, and detect on a new video."""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import types

import pytest

from conftest import IN_MEMORY, REPO, tiny_config
from video_helpers import smooth_frames, write_video
from wtal_tf import io_utils
from wtal_tf.data import datasets as data
from wtal_tf.inference import batch as inference
from wtal_tf.training import trainer as training
from wtal_tf.config import ExtractConfig
from wtal_tf.errors import UserError
from wtal_tf.features import beam_pipeline as pipeline
from wtal_tf.features import weights
from wtal_tf.inference import new_video
from wtal_tf.modeling import checkpoints

SHORTER, CROP = 40, 32
VIDEOS = {  # name: (subset, label, frames)
    "tr_a1": ("validation", "A", 48), "tr_a2": ("validation", "A", 40),
    "tr_b1": ("validation", "B", 48), "tr_b2": ("validation", "B", 33),
    "te_1": ("test", "A", 48), "te_2": ("test", "B", 40)}


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
  """Six videos extracted (rgb, random-init I3D) into one split, with annotations."""
  root = tmp_path_factory.mktemp("raw")
  videos = root / "videos"
  videos.mkdir()
  database = {}
  for k, (name, (subset, label, n)) in enumerate(VIDEOS.items()):
    write_video(videos / f"{name}.mkv", smooth_frames(n, 48, 64, shift=1 + k % 3, seed=k))
    database[name] = {"subset": subset, "annotations": [
        {"label": label, "segment": [0.2, 1.0]}]}
  (root / "annotations.json").write_text(json.dumps({"database": database}))
  cfg = ExtractConfig(video_dir=str(videos), output_dir=str(root / "out"), split="all",
                      streams=("rgb",), resize_shorter=SHORTER, crop_size=CROP,
                      random_init_seed=0, annotations=str(root / "annotations.json"),
                      pipeline_args=IN_MEMORY)
  pipeline.extract(cfg)
  return root


@pytest.fixture(scope="module")
def trained(extracted):
  """A tiny rgb model trained on the extracted dataset: (its config, the training result)."""
  cfg = tiny_config(extracted / "out", extracted / "model",
                    data={"streams": ("rgb",), "train_split": "all", "test_split": "all"},
                    train={"train_steps": 10, "checkpoint_every": 10})
  return cfg, training.train(cfg)


def test_extracted_dataset_trains_and_localizes(extracted, trained):
  out = extracted / "out"
  gt = json.loads((out / "gt.json").read_text())["database"]
  assert {k: (v["subset"], v["annotations"][0]["label"], v["duration"])
          for k, v in gt.items()} == {k: (s, l, n / 25) for k, (s, l, n) in VIDEOS.items()}
  cfg, result = trained
  assert result.steps == 10
  path, results, dataset = inference.localize_to_file(cfg)
  assert set(results) == {"te_1", "te_2"} and dataset.feature_dims == {"rgb": 1024}
  assert set(json.loads(open(path).read())["results"]) == {"te_1", "te_2"}


def test_detect_cli_on_a_new_video(trained, tmp_path):
  model_dir = trained[0].train.model_dir
  video = write_video(tmp_path / "new clip.mkv", smooth_frames(70, 48, 64, seed=9))
  output, picture = tmp_path / "dets.json", tmp_path / "timeline.png"
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
  proc = subprocess.run(
      [sys.executable, "-m", "wtal_tf.detect", f"--model_dir={model_dir}", f"--video={video}",
       f"--output={output}", f"--timeline={picture}", "--random_init_seed=0",
       f"--resize_shorter={SHORTER}", f"--crop_size={CROP}", "--class_threshold=0"],
      capture_output=True, text=True, cwd=REPO, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.split() == [str(output), str(picture)]
  doc = json.loads(output.read_text())
  assert set(doc) == {"version", "results", "external_data"}
  dets = doc["results"]["new clip"]
  assert dets, "class_threshold=0 keeps both classes: some detection expected"
  for d in dets:
    assert d["label"] in ("A", "B") and 0 <= d["segment"][0] <= d["segment"][1] <= 70 / 25
  assert [d["score"] for d in dets] == sorted((d["score"] for d in dets), reverse=True)
  assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_features_made_otherwise_than_the_training_features_are_refused_or_named(
    extracted, trained, tmp_path, caplog):
  """Found by a new user: detect with its default geometry and weights, on a model trained
  on other features, gave other scores with exit 0; so did localize on test videos
  extracted otherwise than the training videos."""
  cfg, _ = trained
  made = json.loads((pathlib.Path(cfg.train.model_dir) / "model.json").read_text())[
      "features_made"]
  assert (made["crop_size"], made["resize_shorter"], made["streams"]) == (
      CROP, SHORTER, {"rgb": "random-numpy:0"})
  video = write_video(tmp_path / "clip.mkv", smooth_frames(40, 48, 64, seed=9))
  detect = lambda **extract: new_video.detect_video(cfg.replace(
      detect={"video": str(video), "output": str(tmp_path / "d.json")},
      extract={"random_init_seed": 0, "resize_shorter": SHORTER, "crop_size": CROP,
               **extract}))
  with pytest.raises(UserError, match=re.escape(
      "the model was trained on features made otherwise than these flags make them "
      f"(trained vs now: crop_size {CROP} vs {CROP - 8}; rgb weights 'random-numpy:0' vs "
      "'random-numpy:1'): pass the extraction flags")):
    detect(crop_size=CROP - 8, random_init_seed=1)
  assert not (tmp_path / "d.json").exists()
  assert detect()[0] == str(tmp_path / "d.json")  # made alike: detections
  # A model trained on features of another time base (own features at 30 fps) is refused
  # before extraction: the detections would be in the wrong seconds.
  spec_path = pathlib.Path(cfg.train.model_dir) / "model.json"
  spec = json.loads(spec_path.read_text())
  assert spec["segment_timing"] == {"feature_fps": 25.0, "segment_frames": 16}
  spec_path.write_text(json.dumps({**spec, "segment_timing": {"feature_fps": 30.0,
                                                              "segment_frames": 16}}))
  try:
    with pytest.raises(UserError, match=re.escape(
        "trained on features of --feature_fps=30 --segment_frames=16, but detect extracts "
        "features of --feature_fps=25 --segment_frames=16: localize features made at the "
        "model's time base instead")):
      detect()
  finally:
    spec_path.write_text(json.dumps(spec))
  # Test videos extracted again at another crop, beside the training videos: the loader
  # and localize name it.
  out, test_videos = tmp_path / "data", tmp_path / "test_videos"
  shutil.copytree(extracted / "out", out)
  test_videos.mkdir()
  for name in ("te_1", "te_2"):
    shutil.copy(extracted / "videos" / f"{name}.mkv", test_videos)
  pipeline.extract(ExtractConfig(
      video_dir=str(test_videos), output_dir=str(out), split="all", streams=("rgb",),
      resize_shorter=SHORTER, crop_size=CROP - 8, random_init_seed=0, pipeline_args=IN_MEMORY))
  caplog.set_level("WARNING")
  data_cfg = cfg.replace(data={"data_dir": str(out)})
  assert data.load_dataset(data_cfg.data).features_made == made  # the training videos'
  assert ("made in 2 ways by wtal_tf.extract: 4 videos (e.g. tr_a1) and 2 (e.g. te_1) differ "
          f"(crop_size {CROP} vs {CROP - 8}); a model takes them as one kind of input") in (
              caplog.text)
  caplog.clear()
  inference.localize_to_file(data_cfg, output=str(tmp_path / "l.json"))
  assert (f"the model was trained on features made otherwise than these (crop_size {CROP} vs "
          f"{CROP - 8}): its scores on them are not to be trusted") in caplog.text


def test_a_resume_on_features_made_otherwise_is_refused_and_none_keeps_what_it_learnt(
    trained, tmp_path):
  """Found in review: resuming on data extracted again at another crop replaced the
  model's features_made without a word (detect then checked against the wrong one)."""
  model_dir = tmp_path / "m"
  shutil.copytree(trained[0].train.model_dir, model_dir)
  _, spec = checkpoints.read_spec(str(model_dir))
  other = {**spec, "features_made": {**spec["features_made"], "crop_size": CROP - 8}}
  with pytest.raises(UserError, match=re.escape(
      f"its checkpoints were trained on features made otherwise than these (trained vs now: "
      f"crop_size {CROP} vs {CROP - 8})")):
    checkpoints.prepare(str(model_dir), other)
  assert checkpoints.read_spec(str(model_dir))[1] == spec  # left as it was
  unrecorded = {k: v for k, v in spec.items() if k != "features_made"}
  checkpoints.prepare(str(model_dir), unrecorded)  # data without records now: kept
  assert checkpoints.read_spec(str(model_dir))[1] == spec


def test_a_model_that_records_no_features_is_not_stamped_with_new_ones_and_says_so(
    trained, tmp_path, caplog):
  """Found by a user upgrading: a model trained before model.json recorded its features,
  resumed on features extracted again otherwise, got those stamped as its own (detect
  then accepted them as matching); detect and localize with it said nothing."""
  model_dir = tmp_path / "m"
  shutil.copytree(trained[0].train.model_dir, model_dir)
  path, spec = checkpoints.read_spec(str(model_dir))
  unrecorded = {k: v for k, v in spec.items() if k != "features_made"}
  io_utils.write_json(path, unrecorded)  # as an older version wrote it
  caplog.set_level("WARNING")
  checkpoints.prepare(str(model_dir), spec)  # resumed on data with status records
  assert checkpoints.read_spec(str(model_dir))[1] == unrecorded
  assert (f"{path}: records nothing of how its training features were made (trained "
          "before model.json recorded it, or on videos not all of whose status records say "
          "the same): these are not checked against them, and it keeps recording nothing"
          ) in caplog.text
  caplog.clear()
  inference.localize_to_file(trained[0].replace(train={"model_dir": str(model_dir)}),
                             output=str(tmp_path / "l.json"))
  assert (f"{model_dir}: the model records nothing of how its training features were made "
          in caplog.text)
  caplog.clear()
  new_video._check_made_alike(  # pylint: disable=protected-access
      trained[0].replace(train={"model_dir": str(model_dir)}),
      types.SimpleNamespace(features_made=None))
  assert "the video's features are not checked against them" in caplog.text


def test_flow_without_checkpoint_is_one_clear_error(tmp_path, monkeypatch):
  cfg = ExtractConfig(streams=("flow",))
  with pytest.raises(UserError, match=re.escape(
      "pass --flow_checkpoint=PATH (a DeepMind kinetics-i3d checkpoint, e.g. "
      "flow_imagenet/model.ckpt), or leave the stream out (e.g. --streams=rgb)")):
    weights.check_weights(cfg, cfg.streams)  # extract checks this before any work
  # detect extracts the model's streams, whatever --streams says: it names the model's
  # need, not --streams (found by a new user).
  write_video(tmp_path / "v.mkv", smooth_frames(20, 48, 64))
  monkeypatch.setattr(new_video, "load_predictor", lambda *_: types.SimpleNamespace(
      streams=("rgb", "flow"), feature_dims={"rgb": 1024, "flow": 1024},
      check_timing=lambda *args: None))  # (a model of extract's time base)
  cfg = tiny_config(tmp_path, tmp_path / "m", data={"streams": ("rgb",)},
                    detect={"video": str(tmp_path / "v.mkv")})
  with pytest.raises(UserError) as error:
    new_video.detect_video(cfg)
  assert str(error.value) == (
      f"{tmp_path / 'm'}: the model has a flow stream, and no flow I3D weights are packaged: "
      "pass --flow_checkpoint=PATH (a DeepMind kinetics-i3d checkpoint, e.g. "
      "flow_imagenet/model.ckpt)")
