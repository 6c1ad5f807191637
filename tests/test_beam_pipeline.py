"""The Beam extraction split below the video (#20): chunks reassembled bit for bit, restart
per chunk, the provenance skip rule, concurrent runs, gt.json and annotations, stale
temporaries, and the records reaching the driver through the pipeline."""

import dataclasses
import errno
import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time
import unicodedata
from unittest import mock

import numpy as np
import pytest

from chunk_runs import extract_counting_chunks, run_killed_after
from conftest import IN_MEMORY, REPO, WORKER_PROCESSES
from video_helpers import smooth_frames, truncate, write_video
from wtal_tf.config import DataConfig, ExtractConfig
from wtal_tf import contract
from wtal_tf import io_utils
from wtal_tf import startup
from wtal_tf.data import datasets as data
from wtal_tf.data import made as made_lib
from wtal_tf.errors import UserError
from wtal_tf.features import beam_pipeline as pipeline
from wtal_tf.features import beam_steps as steps
from wtal_tf.features import extraction
from wtal_tf.features import provenance
from wtal_tf.features import storage
from wtal_tf.features import video

SHORTER, CROP = 40, 32  # small test geometry (defaults: 256, 224)
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
# B-frames and a key frame every 50 frames (2 s at 25 fps), as cameras write.
H264 = {"codec": "libx264", "pix_fmt": "yuv420p",
        "codec_options": {"g": "50", "bf": "3", "sc_threshold": "0"}}


def small_cfg(videos, out, **kw):
  return ExtractConfig(**{"streams": ("rgb",), "resize_shorter": SHORTER, "crop_size": CROP,
                          "random_init_seed": 0, "batch_segments": 2, "chunk_segments": 2,
                          "video_dir": str(videos), "output_dir": str(out),
                          "pipeline_args": IN_MEMORY, **kw})


@pytest.fixture
def videos(tmp_path):
  """Three videos: 7 segments of H.264 with B-frames at 30 fps, 2 of ffv1, 1 of ffv1."""
  root = tmp_path / "videos"
  root.mkdir()
  write_video(root / "long.mp4", smooth_frames(140, 48, 64, seed=1), fps=30, **H264)
  write_video(root / "b.mkv", smooth_frames(33, 48, 64, seed=2))
  write_video(root / "c.mkv", smooth_frames(16, 48, 64, seed=3))
  return root


def features(out, name, stream="rgb"):
  return np.load(contract.feature_path(str(out), "test", stream, name))


@pytest.mark.parametrize("streams", [("rgb",), ("rgb", "flow")])
def test_chunks_reassemble_to_the_one_pass_features_bit_for_bit(videos, tmp_path, streams):
  # The default DirectRunner mode, two worker threads: chunks extracted at once by one
  # shared Extractor.
  cfg = small_cfg(videos, tmp_path / "out", streams=streams,
                  pipeline_args=("--direct_num_workers=2",))
  records = pipeline.extract(cfg)
  assert not steps._EXTRACTORS  # pylint: disable=protected-access  (dropped after the run:
  # the next builds its own, from weights files as they are then)
  assert records["long"]["chunks"] == 4 and records["long"]["segments"] == 7
  one_pass = extraction.Extractor(cfg)
  for name in ("long", "b", "c"):
    direct = one_pass(str(next(videos.glob(name + ".*"))))
    for s in streams:
      np.testing.assert_array_equal(features(tmp_path / "out", name, s), direct.features[s])
    assert records[name]["frames"] == direct.num_frames
  gt = json.loads((tmp_path / "out" / "gt.json").read_text())["database"]
  assert gt["long"] == {"subset": "test", "split": "test", "duration": records["long"]["frames"]
                        / 25, "annotations": []}
  # Finished videos leave no chunk files; the run's summary and marks are gone.
  assert not list((tmp_path / "out").glob(f"{steps.CHUNKS_DIR}/**/*.npz"))
  assert not list((tmp_path / "out").glob(f"{steps.RUNS_DIR}/*.json"))


def test_videos_named_with_wildcard_characters_leave_no_chunks_or_marks(tmp_path):
  """Beam's local filesystem deletes what a path matches as a pattern: the chunks of
  `match [2]` stayed, and deleting those of `a*` could take `ab`'s."""
  videos = tmp_path / "videos"
  videos.mkdir()
  names = ("match [2]", "a*", "ab")
  for k, name in enumerate(names):
    write_video(videos / f"{name}.mkv", smooth_frames(80, 48, 64, seed=k))  # 3 chunks
  out = tmp_path / "out"
  records = pipeline.extract(small_cfg(videos, out))
  assert {n: (r["status"], r["chunks"]) for n, r in records.items()} == {
      n: (steps.OK, 3) for n in names}
  left = [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()
          and p.relative_to(out).parts[0] in (steps.CHUNKS_DIR, steps.PROGRESS_DIR,
                                               steps.RUNS_DIR)]
  assert left == []
  assert sorted(json.loads((out / "gt.json").read_text())["database"]) == sorted(names)


def test_a_link_to_a_missing_video_fails_by_name(videos, tmp_path):
  """A link whose target is not there (an unmounted disk, a git-annex file not fetched)
  was ignored without a word, as a file of another kind."""
  (videos / "day2.mp4").symlink_to(tmp_path / "unmounted" / "day2.mp4")
  out = tmp_path / "out"
  with pytest.raises(UserError, match="1 of 4 videos failed"):
    pipeline.extract(small_cfg(videos, out))
  failures = json.loads(pathlib.Path(steps.failures_path(str(out), "test")).read_text())
  assert failures == [{"video": str(videos / "day2.mp4"), "reason": (
      f"{videos / 'day2.mp4'}: cannot read (a link to {tmp_path / 'unmounted' / 'day2.mp4'}, "
      "which does not exist)")}]
  gt = json.loads((out / "gt.json").read_text())["database"]
  assert sorted(gt) == ["b", "c", "long"]


def test_storage_deletes_the_file_named_and_no_other(tmp_path):
  for name in ("match [2].npz", "match 2.npz", "a*.npz", "ab.npz", "a?.npz"):
    (tmp_path / name).write_bytes(b"x")
  storage.delete([str(tmp_path / "match [2].npz"), str(tmp_path / "a*.npz"),
                  str(tmp_path / "a?.npz"), str(tmp_path / "missing.npz")])
  assert sorted(p.name for p in tmp_path.iterdir()) == ["ab.npz", "match 2.npz"]


def test_chunks_planned_for_more_workers_reassemble_bit_for_bit(videos, tmp_path):
  # 7 segments at most 4 a chunk: 2 chunks for one worker, 3 equal ones for three.
  cfg = small_cfg(videos, tmp_path / "out", chunk_segments=4, chunk_workers=3)
  records = pipeline.extract(cfg)
  assert records["long"]["chunks"] == 3 and records["b"]["chunks"] == 1
  direct = extraction.Extractor(cfg)(str(videos / "long.mp4")).features["rgb"]
  np.testing.assert_array_equal(features(tmp_path / "out", "long"), direct)


def test_a_restart_extracts_only_the_chunks_not_finished(videos, tmp_path):
  cfg = small_cfg(videos, tmp_path / "out")
  extractor = run_killed_after(cfg, str(videos / "long.mp4"), 2)  # two of its four chunks
  assert extract_counting_chunks(cfg, str(videos / "long.mp4"))[1] == [4, 6]
  direct = extractor(str(videos / "long.mp4")).features["rgb"]
  np.testing.assert_array_equal(features(tmp_path / "out", "long"), direct)


def test_chunks_saved_under_other_settings_are_extracted_again(videos, tmp_path):
  cfg = small_cfg(videos, tmp_path / "out")
  run_killed_after(dataclasses.replace(cfg, random_init_seed=1), str(videos / "long.mp4"), 2)
  assert len(list((tmp_path / "out").glob(f"{steps.CHUNKS_DIR}/**/*.npz"))) == 2
  assert extract_counting_chunks(cfg, str(videos / "long.mp4"))[1] == [0, 2, 4, 6]
  direct = extraction.Extractor(cfg)(str(videos / "long.mp4")).features["rgb"]
  np.testing.assert_array_equal(features(tmp_path / "out", "long"), direct)


def test_a_cut_short_video_is_extracted_as_far_as_it_goes_and_the_run_says_so(videos, tmp_path,
                                                                             caplog):
  cut = truncate(write_video(tmp_path / "whole.mkv", smooth_frames(100, 48, 64, seed=4)), 0.6,
                 videos / "cut.mkv")
  caplog.set_level("INFO")
  records = pipeline.extract(small_cfg(videos, tmp_path / "out"))
  record = records["cut"]
  assert record["status"] == "ok" and 50 <= record["frames"] < 62
  assert record["segments"] == record["frames"] // 16
  assert record["warnings"] and record["warnings"][0].startswith(f"{cut}: cut short or damaged")
  assert [r.levelname for r in caplog.records if r.getMessage() == record["warnings"][0]
          and r.name != "wtal_tf.features.video"] == ["WARNING"]  # the driver's line
  assert features(tmp_path / "out", "cut").shape == (record["segments"], contract.FEATURE_DIM)


def test_a_rerun_keeps_features_only_when_nothing_that_made_them_changed(videos, tmp_path,
                                                                         caplog):
  out = tmp_path / "out"
  cfg = small_cfg(videos, out)
  pipeline.extract(cfg)
  first = features(out, "b")
  assert {r["status"] for r in pipeline.extract(cfg).values()} == {"skipped"}
  caplog.set_level("INFO")
  # Other weights (here: another random init) are extracted again, and the log says why.
  records = pipeline.extract(dataclasses.replace(cfg, random_init_seed=1))
  assert {r["status"] for r in records.values()} == {"ok"}
  assert "re-extracting b: rgb weights random-numpy:0" in caplog.text
  assert not np.array_equal(features(out, "b"), first)
  # Other geometry.
  records = pipeline.extract(dataclasses.replace(cfg, random_init_seed=1, crop_size=24))
  assert {r["status"] for r in records.values()} == {"ok"}
  assert "crop_size 32 -> 24" in caplog.text
  # The same name, another video.
  cfg = dataclasses.replace(cfg, random_init_seed=1, crop_size=24)
  write_video(videos / "b.mkv", smooth_frames(48, 48, 64, seed=9))
  records = pipeline.extract(cfg)
  assert records["b"]["status"] == "ok" and records["b"]["segments"] == 3
  assert records["c"]["status"] == "skipped"
  assert "re-extracting b: the video file changed" in caplog.text


@pytest.mark.parametrize("refused", [steps.PROGRESS_DIR, steps.CHUNKS_DIR])
def test_a_rerun_that_cannot_write_keeps_the_features_it_would_have_replaced(
    videos, tmp_path, monkeypatch, refused):
  """On a full disk, a rerun with other settings failed every video on its first write
  (a chunk's progress mark) and then deleted their features and emptied gt.json (which
  freed the space to write that)."""
  out = tmp_path / "out"
  cfg = small_cfg(videos, out)
  pipeline.extract(cfg)
  files = {p: p.read_bytes() for p in out.rglob("*")
           if p.is_file() and p.relative_to(out).parts[0] in ("features", steps.STATUS_DIR)}
  entries = json.loads((out / "gt.json").read_text())["database"]
  write = storage.write_bytes

  def full_disk(path, data):
    if f"/{refused}/" in path:
      raise UserError(f"{path}: cannot write (No space left on device)")
    write(path, data)

  monkeypatch.setattr(storage, "write_bytes", full_disk)
  with pytest.raises(UserError, match="failed"):
    pipeline.extract(dataclasses.replace(cfg, crop_size=24))
  failures = json.loads(pathlib.Path(steps.failures_path(str(out), "test")).read_text())
  assert {f["reason"].split(":")[-1] for f in failures} == {" cannot write (No space left "
                                                            "on device)"}
  failed = {pathlib.Path(f["video"]).stem for f in failures}
  assert failed == ({"long", "b", "c"} if refused == steps.PROGRESS_DIR else {"long"})  # (a
  # one-chunk video saves no chunk)
  kept = {p: b for p, b in files.items() if p.stem in failed}
  assert len(kept) == 2 * len(failed) and {p: p.read_bytes() for p in kept} == kept
  database = json.loads((out / "gt.json").read_text())["database"]
  assert {n: database.get(n) for n in failed} == {n: entries[n] for n in failed}
  monkeypatch.setattr(storage, "write_bytes", write)
  records = pipeline.extract(dataclasses.replace(cfg, crop_size=24))  # room again
  assert {n: records[n]["status"] for n in failed} == {n: "ok" for n in failed}


def test_a_video_out_of_reach_keeps_its_features_a_corrupt_one_does_not(videos, tmp_path,
                                                                         monkeypatch):
  """(review) A worker that cannot read the file (an I/O error, no permission, not
  mounted there) says nothing of the video: its earlier features stay."""
  out = tmp_path / "out"
  cfg = small_cfg(videos, out)
  pipeline.extract(cfg)
  kept = features(out, "c")
  opened = video.av.open

  def unreachable(path, *args, **kwargs):
    if str(path).endswith("c.mkv"):
      raise OSError(errno.EIO, os.strerror(errno.EIO))
    return opened(path, *args, **kwargs)
  monkeypatch.setattr(video.av, "open", unreachable)
  with pytest.raises(UserError, match="1 of 3 videos failed"):
    pipeline.extract(dataclasses.replace(cfg, crop_size=24))
  np.testing.assert_array_equal(features(out, "c"), kept)
  assert "c" in json.loads((out / "gt.json").read_text())["database"]
  monkeypatch.setattr(video.av, "open", opened)
  (videos / "c.mkv").write_bytes(b"not a video")  # its content: its features go
  with pytest.raises(UserError, match="1 of 3 videos failed"):
    pipeline.extract(dataclasses.replace(cfg, crop_size=24))
  assert not pathlib.Path(contract.feature_path(str(out), "test", "rgb", "c")).exists()
  assert "c" not in json.loads((out / "gt.json").read_text())["database"]


def test_a_split_made_otherwise_than_the_others_is_a_warning(videos, tmp_path, caplog):
  """Extracting the test split again with other weights left the validation split as it
  was, and only training warned (a model takes both as one kind of input)."""
  out = tmp_path / "out"
  val = tmp_path / "val"
  val.mkdir()
  shutil.move(videos / "c.mkv", val / "c.mkv")
  pipeline.extract(small_cfg(val, out, split="validation"))
  cfg = small_cfg(videos, out)
  caplog.set_level("INFO")
  pipeline.extract(cfg)
  assert "made otherwise" not in caplog.text
  pipeline.extract(dataclasses.replace(cfg, random_init_seed=1))
  warnings = [r.getMessage() for r in caplog.records
              if r.levelname == "WARNING" and "made otherwise" in r.getMessage()]
  assert warnings == [
      f"{out / 'features' / 'validation'}: features made otherwise than this run's (1 of the "
      "1 videos checked; e.g. c, its vs this run's: rgb weights 'random-numpy:0' vs "
      "'random-numpy:1'); a model takes every split's features as one kind of input: "
      "extract 'validation' again with these settings"]
  # Extracted again alike: both splits agree, and neither run warns.
  caplog.clear()
  pipeline.extract(small_cfg(val, out, split="validation", random_init_seed=1))
  pipeline.extract(dataclasses.replace(cfg, random_init_seed=1))
  assert "made otherwise" not in caplog.text


def test_weights_are_identified_by_the_bytes_of_their_files(tmp_path, monkeypatch):
  pickle_file, prefix = tmp_path / "rgb.ckpt", tmp_path / "ckpt" / "model.ckpt"
  data_file, index_file = (pathlib.Path(f"{prefix}{suffix}")
                           for suffix in (".data-00000-of-00001", ".index"))
  pickle_file.write_bytes(b"weights A")
  prefix.parent.mkdir()
  data_file.write_bytes(b"data")
  index_file.write_bytes(b"index")
  cfg = ExtractConfig(rgb_checkpoint=str(pickle_file), streams=("rgb",))
  one = provenance.weights_identity(cfg, "rgb")
  assert one == "sha256:" + provenance.file_digest([str(pickle_file)])
  pickle_file.write_bytes(b"weights B")  # the same path, other weights
  assert provenance.weights_identity(cfg, "rgb") != one
  # A TF checkpoint prefix and its folder: both files, the same identity either way.
  by_prefix = provenance.weights_identity(ExtractConfig(rgb_checkpoint=str(prefix)), "rgb")
  by_folder = provenance.weights_identity(ExtractConfig(rgb_checkpoint=str(prefix.parent)), "rgb")
  assert by_prefix == by_folder == "sha256:" + provenance.file_digest(
      [str(data_file), str(index_file)])
  data_file.write_bytes(b"other data")
  assert provenance.weights_identity(ExtractConfig(rgb_checkpoint=str(prefix)), "rgb") != by_prefix
  # The code's feature version is part of what made a file.
  stored = provenance.settings(cfg, {"rgb": one})
  monkeypatch.setattr(provenance, "FEATURE_VERSION", provenance.FEATURE_VERSION + 1)
  assert made_lib.changes(stored, provenance.settings(cfg, {"rgb": one})) == [
      f"feature_version {provenance.FEATURE_VERSION - 1} -> {provenance.FEATURE_VERSION}"]


def test_the_skip_rule_checks_the_feature_files(videos, tmp_path):
  cfg = small_cfg(videos, tmp_path / "out")
  pipeline.extract(cfg)
  # A rerun checks each feature file from its header and size, without reading its data.
  with mock.patch.object(pipeline.storage, "read_bytes", wraps=storage.read_bytes) as reads:
    assert {r["status"] for r in pipeline.extract(cfg).values()} == {"skipped"}
  assert not [c for c in reads.call_args_list if c.args[0].endswith(".npy")]
  path = contract.feature_path(str(tmp_path / "out"), "test", "rgb", "b")
  for damaged in (np.zeros((2, 3), np.float32), np.zeros((1, 1024), np.float32),
                  np.zeros((2, 1024), np.float64)):
    np.save(path, damaged)
    assert pipeline.extract(cfg)["b"]["status"] == "ok"
  with open(path, "r+b") as f:  # cut short
    f.truncate(100)
  assert pipeline.extract(cfg)["b"]["status"] == "ok"
  assert features(tmp_path / "out", "b").shape == (2, 1024)


def test_streams_not_extracted_again_are_kept_if_made_alike_else_removed(tmp_path, caplog):
  """Found by a new user: rgb extracted again at another crop left the flow features of
  the old crop beside it, named by no record, for `localize --streams=rgb,flow` to mix."""
  videos = tmp_path / "videos"
  videos.mkdir()
  write_video(videos / "v.mkv", smooth_frames(33, 48, 64, seed=4))
  out = tmp_path / "out"
  both = small_cfg(videos, out, streams=("rgb", "flow"))
  pipeline.extract(both)
  flow = pathlib.Path(contract.feature_path(str(out), "test", "flow", "v"))
  made_flow = flow.read_bytes()
  # rgb again (its file damaged), as flow was made: flow is kept, and recorded.
  pathlib.Path(contract.feature_path(str(out), "test", "rgb", "v")).write_bytes(b"damaged")
  assert pipeline.extract(small_cfg(videos, out))["v"]["status"] == steps.OK
  assert flow.read_bytes() == made_flow
  assert pipeline.extract(both)["v"]["status"] == steps.SKIPPED
  # rgb again at another crop: flow, made at the old one, is removed, with a warning.
  caplog.set_level("WARNING")
  record = pipeline.extract(small_cfg(videos, out, crop_size=CROP - 8))["v"]
  assert record["status"] == steps.OK and list(record["provenance"]["streams"]) == ["rgb"]
  assert not flow.exists()
  assert any("removed its flow features, made with other settings" in r.getMessage()
             for r in caplog.records)


def test_a_stream_another_run_made_meanwhile_is_kept(tmp_path):
  """Two runs at once on one OUT, one extracting rgb, the other flow: the assembly reads
  the video's record then, not at planning, so the flow run keeps (and names) the rgb
  features made meanwhile, although the rgb it saw when planning was made another way."""
  videos = tmp_path / "videos"
  videos.mkdir()
  write_video(videos / "v.mkv", smooth_frames(33, 48, 64, seed=4))
  out = tmp_path / "out"
  pipeline.extract(small_cfg(videos, out, crop_size=CROP - 8))  # rgb, made another way
  real_run = pipeline._run

  def rgb_run_meanwhile(*args, **kwargs):
    # The flow run has planned; an rgb run, made as the flow run makes its own, finishes.
    with mock.patch.object(pipeline, "_run", real_run):
      assert pipeline.extract(small_cfg(videos, out))["v"]["status"] == steps.OK
    return real_run(*args, **kwargs)

  with mock.patch.object(pipeline, "_run", side_effect=rgb_run_meanwhile) as run:
    record = pipeline.extract(small_cfg(videos, out, streams=("flow",)))["v"]
  assert run.call_count == 1 and record["status"] == steps.OK
  assert record["provenance"]["streams"].keys() == {"rgb", "flow"}
  assert features(out, "v", "rgb").shape == features(out, "v", "flow").shape == (2, 1024)
  assert pipeline.extract(small_cfg(videos, out, streams=("rgb", "flow")))["v"][
      "status"] == steps.SKIPPED


def test_other_streams_are_kept_only_when_made_alike():
  rgb, flow = {"rgb": "random:0"}, {"flow": "random:0"}
  base = {"feature_version": 1, "crop_size": 32}
  old = {"provenance": {**base, "flow_engine": "opencv", "streams": flow},
         "video_identity": {"size": 1}}
  made = {"settings": {**base, "streams": rgb}, "video_identity": {"size": 1}}
  assert provenance.other_streams(old, made) == (
      {**base, "flow_engine": "opencv", "streams": {**flow, **rgb}}, [])
  for changed in ({"settings": {**base, "crop_size": 24, "streams": rgb}},
                  {"video_identity": {"size": 2}}):
    assert provenance.other_streams(old, {**made, **changed}) == (
        {**made, **changed}["settings"], ["flow"])
  # Flow's own setting (its engine) says nothing of rgb: rgb is kept when flow is made.
  old_rgb = {"provenance": {**base, "streams": rgb}, "video_identity": {"size": 1}}
  made_flow = {"settings": {**base, "flow_engine": "opencv", "streams": flow},
               "video_identity": {"size": 1}}
  assert provenance.other_streams(old_rgb, made_flow) == (
      {**base, "flow_engine": "opencv", "streams": {**rgb, **flow}}, [])
  assert made_lib.changes(old_rgb["provenance"], made_flow["settings"]) == [
      "no flow features"]  # (not also "flow_engine None -> 'opencv'")
  assert made_lib.changes(old["provenance"], {**made_flow["settings"],
                                                    "flow_engine": "keras"}) == [
      "flow_engine 'opencv' -> 'keras'"]
  assert provenance.other_streams(None, made) == (made["settings"], [])
  assert provenance.other_streams({"provenance": {**base, "streams": rgb}}, made) == (
      made["settings"], [])


def test_records_come_through_the_pipeline_not_from_files_on_the_driver(videos, tmp_path):
  cfg = small_cfg(videos, tmp_path / "out")
  with mock.patch.object(pipeline.storage, "read_json", wraps=storage.read_json) as reads:
    records = pipeline.extract(cfg)
  with mock.patch.object(pipeline.storage, "read_json", wraps=storage.read_json) as merge_reads:
    steps.merge_gt(cfg.output_dir)  # as the pipeline's last step does, once
  status_reads = [c for c in reads.call_args_list if steps.STATUS_DIR in str(c)]
  merged = [c for c in merge_reads.call_args_list if steps.STATUS_DIR in str(c)]
  # the skip check before the run and the assembly's (provenance.other_streams), one per
  # video each, and the gt.json merge of the last step
  assert len(merged) == 3 and len(status_reads) == 3 + 3 + len(merged)
  assert {r["status"] for r in records.values()} == {"ok"}
  # A pipeline that wrote no summary is an error, not a guess from old records.
  with mock.patch.object(pipeline, "run_pipeline"), pytest.raises(UserError,
                                                                  match="ended without writing"):
    pipeline.extract(dataclasses.replace(cfg, random_init_seed=2))


def test_two_runs_at_once_both_succeed_and_gt_json_is_complete(videos, tmp_path):
  for k in range(4):
    write_video(videos / f"more{k}.mkv", smooth_frames(20, 48, 64, seed=10 + k))
  out = tmp_path / "out"
  args = [sys.executable, "-m", "wtal_tf.extract", f"--video_dir={videos}",
          f"--output_dir={out}", "--streams=rgb", "--random_init_seed=0",
          f"--resize_shorter={SHORTER}", f"--crop_size={CROP}", "--chunk_segments=2",
          *IN_MEMORY]
  procs = [subprocess.Popen(args, cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for _ in range(2)]
  results = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, results):
    assert p.returncode == 0, err[-3000:]
  gt = json.loads((out / "gt.json").read_text())["database"]
  assert set(gt) == {"long", "b", "c", "more0", "more1", "more2", "more3"}
  one_pass = extraction.Extractor(small_cfg(videos, out))
  for name in gt:
    direct = one_pass(str(next(videos.glob(name + ".*")))).features["rgb"]
    np.testing.assert_array_equal(features(out, name), direct)


def test_concurrent_gt_merges_lose_no_entry(tmp_path):
  """Three threads, each 30 runs of one video (its status record, then merge_gt) into
  one OUT at once, without a lock: gt.json ends with all 90 entries."""
  out = str(tmp_path / "out")

  def runs(k):
    for i in range(30):
      storage.write_json(steps.status_path(out, "test", f"v{k}_{i}"),
                         {"status": "ok", steps.GT_KEY: {"duration": 1.0}})
      steps.merge_gt(out)

  threads = [threading.Thread(target=runs, args=(k,)) for k in range(3)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=120)
  database = json.loads(pathlib.Path(contract.gt_path(out)).read_text())["database"]
  assert sorted(database) == sorted(f"v{k}_{i}" for k in range(3) for i in range(30))


def test_a_merge_overtaken_by_another_run_makes_gt_json_again(tmp_path):
  """Run B writes its record and merges between run A's listing and A's write (A's
  gt.json then lacks B's video): A lists again after writing and writes it again."""
  out = str(tmp_path / "out")
  gt = contract.gt_path(out)
  real = storage.write_json
  overtaken = []

  def write_json(path, obj, indent=1):
    if path == gt and not overtaken:
      overtaken.append(True)
      real(steps.status_path(out, "test", "b"), {"status": "ok", steps.GT_KEY: {"d": 2}})
      steps.merge_gt(out)  # run B, whole, before A's write
      assert set(json.loads(pathlib.Path(gt).read_text())["database"]) == {"a", "b"}
      assert set(obj["database"]) == {"a"}  # what A is about to write
    real(path, obj, indent)

  real(steps.status_path(out, "test", "a"), {"status": "ok", steps.GT_KEY: {"d": 1}})
  with mock.patch.object(storage, "write_json", write_json):
    steps.merge_gt(out)  # run A
  assert overtaken
  assert json.loads(pathlib.Path(gt).read_text())["database"] == {"a": {"d": 1}, "b": {"d": 2}}


def test_gt_json_takes_each_video_from_its_record_and_keeps_other_entries(tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "gt.json").write_text(json.dumps({"database": {
      "foreign": {"subset": "x"}, "old": {"subset": "old"}, "failed": {"subset": "f"},
      "changed": {"subset": "before"}}}))
  for split, name, record in (
      ("test", "old", {"status": "ok"}),  # a record from before GT_KEY: its entry is kept
      ("test", "failed", {"status": "failed", steps.GT_KEY: None}),  # its entry removed
      ("test", "changed", {"status": "ok", steps.GT_KEY: {"subset": "after"}}),
      ("train", "new", {"status": "ok", steps.GT_KEY: {"subset": "train"}})):
    storage.write_json(steps.status_path(str(out), split, name), record)
  steps.merge_gt(str(out))
  assert json.loads((out / "gt.json").read_text())["database"] == {
      "foreign": {"subset": "x"}, "old": {"subset": "old"}, "changed": {"subset": "after"},
      "new": {"subset": "train"}}
  assert not list(out.glob("*.lock"))


def test_a_gt_json_whose_database_is_not_an_object_fails_before_any_work(videos, tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "gt.json").write_text(json.dumps({"database": [1, 2]}))
  with mock.patch.object(pipeline, "run_pipeline") as run, pytest.raises(
      UserError, match=f"{out / 'gt.json'}: not ActivityNet ground truth"):
    pipeline.extract(small_cfg(videos, out))
  run.assert_not_called()


def write_annotations(path, database):
  path.write_text(json.dumps({"database": database}))
  return str(path)


def test_annotations_that_match_no_video_fail_and_partial_matches_are_counted(videos, tmp_path,
                                                                              caplog):
  entry = {"subset": "validation", "annotations": [{"label": "A", "segment": [0, 1]}]}
  keyed_by_file = write_annotations(tmp_path / "a.json", {"b.mkv": entry, "c.mkv": entry})
  with pytest.raises(UserError, match="match none of the 3 videos"):
    pipeline.extract(small_cfg(videos, tmp_path / "out", annotations=keyed_by_file))
  caplog.set_level("INFO")
  partial = write_annotations(tmp_path / "p.json", {"b": entry, "gone": entry})
  pipeline.extract(small_cfg(videos, tmp_path / "out", annotations=partial))
  assert "1 of 3 videos annotated; 1 annotated videos not in the video folder (gone)" in (
      caplog.text)


def test_videos_annotated_for_another_subset_are_found_where_they_were_written(videos,
                                                                               tmp_path):
  """--split=test with training annotations: gt.json records the split, so the training
  reader (features/train by default) still finds them."""
  out = tmp_path / "out"
  entry = {"subset": "validation", "annotations": [{"label": "A", "segment": [0, 1]}]}
  annotations = write_annotations(tmp_path / "a.json", {"long": entry, "b": entry,
                                                        "c": {**entry, "subset": "test"}})
  pipeline.extract(small_cfg(videos, out, annotations=annotations))
  ds = data.load_dataset(DataConfig(data_dir=str(out), streams=("rgb",)))
  assert sorted(v.name for v in ds.train) == ["b", "long"]
  assert [v.name for v in ds.test] == ["c"]


def test_a_rerun_keeps_the_labels_given_before_to_videos_its_annotations_do_not_list(
    videos, tmp_path):
  """Found by a new user: a rerun without --annotations, or with a file listing only a new
  video, wrote every other video's entry with no annotations (exit 0), so evaluation
  scored true detections as false positives."""
  out = tmp_path / "out"
  entry = lambda label, subset="test": {"subset": subset,
                                        "annotations": [{"label": label, "segment": [0, 1]}]}
  labels = lambda: {n: (e["subset"], [a["label"] for a in e["annotations"]])
                    for n, e in json.loads((out / "gt.json").read_text())["database"].items()}
  pipeline.extract(small_cfg(videos, out, annotations=write_annotations(
      tmp_path / "a.json", {"long": entry("A", "validation"), "b": entry("B")})))
  given = {"long": ("validation", ["A"]), "b": ("test", ["B"]), "c": ("test", [])}
  assert labels() == given
  pipeline.extract(small_cfg(videos, out))  # no --annotations, all done: labels kept
  assert labels() == given
  # Annotations of c only, with every video made again (another crop): the others keep
  # theirs; then b's removed by listing it without annotations.
  pipeline.extract(small_cfg(videos, out, crop_size=CROP - 8, annotations=write_annotations(
      tmp_path / "c.json", {"c": entry("C")})))
  assert labels() == {**given, "c": ("test", ["C"])}
  pipeline.extract(small_cfg(videos, out, crop_size=CROP - 8, annotations=write_annotations(
      tmp_path / "b.json", {"b": {"subset": "test", "annotations": []}})))
  assert labels() == {**given, "c": ("test", ["C"]), "b": ("test", [])}
  # A run into another split leaves them as they are.
  other = tmp_path / "other"
  other.mkdir()
  write_video(other / "d.mkv", smooth_frames(16, 48, 64, seed=5))
  pipeline.extract(small_cfg(other, out, split="train"))
  assert labels() == {**given, "c": ("test", ["C"]), "b": ("test", []), "d": ("train", [])}


def test_a_rerun_removes_stale_temporary_files_only(videos, tmp_path):
  out = tmp_path / "out"
  pipeline.extract(small_cfg(videos, out))
  folder = out / "features" / "test" / "rgb"
  stale = folder / f".b.npy{storage.TMP_MARK}dead"
  fresh = folder / f".c.npy{storage.TMP_MARK}live"
  for f in (stale, fresh):
    f.write_bytes(b"half a file")
  old = time.time() - storage.STALE_TEMPORARY_S - 60
  os.utime(stale, (old, old))
  pipeline.extract(small_cfg(videos, out))
  assert not stale.exists() and fresh.exists()


def test_a_rerun_removes_the_progress_marks_of_abandoned_runs_only(videos, tmp_path, caplog):
  out = tmp_path / "out"
  progress = out / steps.PROGRESS_DIR
  killed, live = progress / "killed-run", progress / "live-run"
  for run, marks in ((killed, ["long.0.2.done", "long.1.2.done", "long.2.2.done"]),
                     (live, ["long.0.2.done"])):
    run.mkdir(parents=True)
    for mark in marks:
      (run / mark).write_bytes(b"")
  old = time.time() - pipeline.ABANDONED_PROGRESS_S - 60
  for mark in killed.iterdir():
    os.utime(mark, (old, old))
  os.utime(killed / "long.1.2.done")  # the killed run's newest mark is recent: kept
  assert pipeline.remove_abandoned_progress(str(out)) == 0
  assert len(list(killed.iterdir())) == 3
  os.utime(killed / "long.1.2.done", (old, old))
  # Found by a user: the workers of an interrupted driver's run (on a cluster they go on)
  # write its summary, which nobody reads: removed once as old, with the same run's marks
  runs = out / steps.RUNS_DIR
  runs.mkdir()
  for run in ("killed-run", "other-killed-run", "live-run"):
    (runs / f"{run}.json").write_text("[]")
    if run != "live-run":
      os.utime(runs / f"{run}.json", (old, old))
  caplog.set_level("INFO")
  pipeline.extract(small_cfg(videos, out))
  assert not killed.exists() and live.exists()
  assert sorted(p.name for p in runs.iterdir()) == ["live-run.json"]
  assert "removed what 2 abandoned runs left (progress marks, summaries)" in caplog.text
  # This run's own folder is gone at its end.
  assert sorted(p.name for p in progress.iterdir()) == ["live-run"]


def test_an_interrupted_driver_stops_the_chunks_its_workers_have_not_begun(videos, tmp_path):
  """Found by a user: after Ctrl-C the driver ended, but a Dask cluster's workers went on
  extracting the whole run (and cancelling the run's futures did not stop them). The
  driver leaves a stop mark; each chunk looks for it first. (Measured on a 2-worker
  cluster, 4 videos of 13 chunks: after the interrupt, the 2 chunks under way finished
  and no other began, where before all went on for 60 s.)"""
  out = tmp_path / "out"
  cfg = small_cfg(videos, out)
  with mock.patch.object(pipeline, "run_pipeline", side_effect=KeyboardInterrupt):
    with pytest.raises(KeyboardInterrupt):
      pipeline.extract(cfg)
  stop_marks = list((out / steps.PROGRESS_DIR).glob(f"*/{steps.STOPPED_MARK}"))
  assert len(stop_marks) == 1
  run_id = stop_marks[0].parent.name
  task = {"name": "b", "video": str(videos / "b.mkv"), "index": 0, "start": 0, "count": None,
          "made": {}}
  with pytest.raises(steps.RunStopped, match="chunk 0 not extracted: the run's driver was "
                                             "interrupted"):
    list(steps.ExtractChunkFn(cfg, run_id).process(task))
  assert not list(out.rglob("*.npy")) and not list(out.rglob("*.npz"))
  pipeline.extract(cfg)  # a rerun is another run: not stopped
  assert len(list((out / "features" / "test" / "rgb").iterdir())) == 3


def test_progress_counts_videos_segments_per_second_and_time_left(tmp_path, caplog):
  cfg = small_cfg(tmp_path, tmp_path / "out")
  tasks = [{"name": "long", "index": k} for k in range(4)] + [{"name": "b", "index": 0},
                                                              {"name": "c", "index": 0}]
  progress = pipeline._Progress(cfg, "this-run", tasks)  # pylint: disable=protected-access
  caplog.set_level("INFO")
  with mock.patch.object(pipeline.time, "time", return_value=progress.start_time + 10.0):
    progress.report()  # nothing finished yet
    marks = tmp_path / "out" / steps.PROGRESS_DIR / "this-run"
    marks.mkdir(parents=True)
    for name, chunk, segments in (("long", 0, 2), ("long", 3, 1), ("b", 0, 2)):
      (marks / f"{steps.mark_key(name)}.{chunk}.{segments}{steps.MARK_EXT}").write_text("w")
    progress.report()
    for name, chunk, segments in (("long", 1, 2), ("long", 2, 2), ("c", 0, 3)):
      (marks / f"{steps.mark_key(name)}.{chunk}.{segments}{steps.MARK_EXT}").write_text("w")
    progress.report()  # found by a user: "about 0 s left" while the files were written
    progress.report(final=True)
  # 5 segments in 10 s; 3 of 6 chunks left at 10 s / 3 chunks each.
  assert [r.getMessage() for r in caplog.records] == [
      "extract test: 0/3 videos done, 0.0 segments/s, about ? left",
      "extract test: 1/3 videos done, 0.5 segments/s, about 10 s left",
      "extract test: 3/3 videos done, 1.2 segments/s, writing the videos' files",
      "extract test: 3/3 videos done, 1.2 segments/s, about 0 s left"]


def test_progress_is_logged_while_the_pipeline_runs(videos, tmp_path, caplog):
  caplog.set_level("INFO")
  with mock.patch.object(pipeline, "PROGRESS_EVERY_S", 0.05):
    pipeline.extract(small_cfg(videos, tmp_path / "out"))
  lines = [r for r in caplog.records if "videos done" in r.getMessage()]
  during = [r for r in lines if r.threadName != threading.current_thread().name]
  assert during, [r.getMessage() for r in lines]  # from the progress thread, not the end
  assert lines[-1].getMessage().startswith("extract test: 3/3 videos done")


def test_worker_threads_share_one_extractor_built_once(tmp_path, monkeypatch):
  builds = []

  class SlowExtractor:
    def __init__(self, cfg):
      builds.append(cfg)
      time.sleep(0.2)  # both threads ask while the first is being built

  monkeypatch.setattr(steps, "extraction_module", lambda: mock.Mock(Extractor=SlowExtractor))
  monkeypatch.setattr(steps, "_EXTRACTORS", {})  # (none built yet, none kept after)
  cfg = small_cfg(tmp_path, tmp_path / "out")
  got = []
  build = steps._extractor  # pylint: disable=protected-access
  weight_ids = {"rgb": "sha256:1"}
  threads = [threading.Thread(target=lambda: got.append(build(cfg, weight_ids)))
             for _ in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert len(builds) == 1 and len(got) == 2 and got[0] is got[1]
  # Built from the config's encoding alone (what an Extractor reads), not its folders.
  assert builds[0] == ExtractConfig(streams=cfg.streams, resize_shorter=SHORTER,
                                    crop_size=CROP, random_init_seed=0, batch_segments=2)


def test_a_worker_builds_its_extractor_again_when_the_weights_file_changed(
    tmp_path, monkeypatch):
  """A warm Dask worker keeps its Extractors from run to run: one built from a file's old
  weights must not extract a later run that was given the new ones, and is dropped."""
  monkeypatch.setattr(steps, "extraction_module", lambda: mock.Mock(Extractor=mock.Mock))
  monkeypatch.setattr(steps, "_EXTRACTORS", {})
  cfg = small_cfg(tmp_path, tmp_path / "out")
  build = steps._extractor  # pylint: disable=protected-access
  first = build(cfg, {"rgb": "sha256:old"})
  assert build(cfg, {"rgb": "sha256:old"}) is first
  second = build(cfg, {"rgb": "sha256:new"})
  assert second is not first and build(cfg, {"rgb": "sha256:new"}) is second
  assert list(steps._EXTRACTORS.values()) == [second]  # pylint: disable=protected-access
  elsewhere = dataclasses.replace(cfg, output_dir=str(tmp_path / "other"), split="val")
  assert build(elsewhere, {"rgb": "sha256:new"}) is second  # the same encoding
  other = build(dataclasses.replace(cfg, crop_size=cfg.crop_size - 1), {"rgb": "sha256:new"})
  assert other is not second and len(steps._EXTRACTORS) == 2  # pylint: disable=protected-access


@pytest.mark.parametrize("mode, imported_first", [
    ((), True), (IN_MEMORY, True), (WORKER_PROCESSES, False)])
def test_tensorflow_is_imported_before_the_progress_lines_when_workers_are_threads(
    tmp_path, monkeypatch, mode, imported_first):
  """Its first import silences file descriptor 2 for a few seconds (wtal_tf.startup): a
  progress line the driver logged meanwhile would be lost."""
  calls = []
  monkeypatch.setattr(pipeline, "extraction_module", lambda: calls.append("import"))
  start = pipeline._Progress.start  # pylint: disable=protected-access
  monkeypatch.setattr(pipeline._Progress, "start",  # pylint: disable=protected-access
                      lambda self: calls.append("progress") or start(self))
  monkeypatch.setattr(pipeline, "run_pipeline", lambda *args: calls.append("pipeline"))
  cfg = small_cfg(tmp_path, tmp_path / "out", pipeline_args=mode)
  run = pipeline._run  # pylint: disable=protected-access
  with pytest.raises(UserError, match="ended without writing its summary"):
    run(cfg, pipeline.pipeline_options(mode), [], [], {})
  assert calls == (["import"] if imported_first else []) + ["progress", "pipeline"]


def test_an_output_folder_that_cannot_be_written_fails_before_any_work(videos, tmp_path):
  out = tmp_path / "out"
  (out / "features" / "test").mkdir(parents=True)
  (out / "features" / "test" / "rgb").write_text("a file where a folder must be")
  with mock.patch.object(pipeline, "run_pipeline") as run, pytest.raises(
      UserError, match="cannot create output folder"):
    pipeline.extract(small_cfg(videos, out))
  run.assert_not_called()


def test_a_feature_file_that_cannot_be_written_fails_that_video_only(videos, tmp_path):
  out = tmp_path / "out"
  blocked = pathlib.Path(contract.feature_path(str(out), "test", "rgb", "long"))
  blocked.mkdir(parents=True)  # a folder where long's feature file must go
  with pytest.raises(UserError, match="1 of 3 videos failed"):
    pipeline.extract(small_cfg(videos, out))
  failures = json.loads(pathlib.Path(steps.failures_path(str(out), "test")).read_text())
  assert [f["video"] for f in failures] == [str(videos / "long.mp4")]
  assert failures[0]["reason"].startswith(f"{blocked}: cannot write (")
  assert "\n" not in failures[0]["reason"]
  assert set(json.loads((out / "gt.json").read_text())["database"]) == {"b", "c"}
  for name in ("b", "c"):  # the other videos are complete
    assert features(out, name).shape == (contract.num_segments(
        {"b": 33, "c": 16}[name]), contract.FEATURE_DIM)
  # long's finished chunks are kept for a rerun; its record says it was being written, so
  # it is not skipped.
  assert sorted(p.name for p in (out / steps.CHUNKS_DIR / "test" / "long").iterdir()) == [
      "0.npz", "1.npz", "2.npz", "3.npz"]
  record = json.loads((out / steps.STATUS_DIR / "test" / "long.json").read_text())
  assert record["status"] == steps.WRITING
  blocked.rmdir()
  records = pipeline.extract(small_cfg(videos, out))
  assert {n: r["status"] for n, r in records.items()} == {
      "long": steps.OK, "b": steps.SKIPPED, "c": steps.SKIPPED}


@pytest.mark.parametrize("mode", ["multi_threading", "multi_processing"])
def test_a_run_failed_by_a_user_error_in_a_worker_is_one_line(videos, tmp_path, mode):
  """The summary step cannot write (its folder replaced by a file after the checks): with
  worker processes the driver gets the worker's traceback as text; worker threads (the
  default) print it to the driver's stderr, where it is dropped."""
  out = tmp_path / "out"
  runs = out / steps.RUNS_DIR
  code = (f"import pathlib, shutil; from wtal_tf import cli, extract; "
          f"from wtal_tf.features import beam_pipeline as p; real = p._check_writable\n"
          f"def checked(cfg):\n  real(cfg); runs = pathlib.Path({str(runs)!r}); "
          f"shutil.rmtree(runs); runs.write_text('a file where a folder must be')\n"
          f"p._check_writable = checked; extract.define_flags()\n"
          f"cli.run(extract.main, pass_unknown=True)")
  args = [f"--video_dir={videos}", f"--output_dir={out}", "--streams=rgb",
          "--random_init_seed=0", f"--resize_shorter={SHORTER}", f"--crop_size={CROP}",
          "--chunk_segments=2", "--direct_num_workers=2", f"--direct_running_mode={mode}"]
  proc = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO,
                        env={**ENV, startup.QUIET_ENV: "1"},  # as `python -m` starts
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: {runs}/") and last.endswith(
      ": cannot write (File exists)"), last  # (Beam's " [while running '...']" is cut)
  assert [line for line in proc.stderr.splitlines() if not line.startswith("I")] == [last]
  # The videos' own outputs are complete before the summary step.
  assert set(json.loads((out / "gt.json").read_text())["database"]) == {"long", "b", "c"}


def test_the_line_of_a_user_error_is_found_in_a_runners_exception():
  worker_traceback = ("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                      "wtal_tf.errors.UserError: OUT/a.json: cannot write (denied)\n\n"
                      "During handling of the above exception, another exception occurred:\n"
                      "wtal_tf.errors.UserError: OUT/a.json: cannot write (denied) "
                      "[while running 'dataset files']\n")
  assert pipeline.user_error_line(RuntimeError(worker_traceback)) == (
      "OUT/a.json: cannot write (denied)")
  assert pipeline.user_error_line(UserError("v.mp4: bad [while running 'extract']")) == (
      "v.mp4: bad")
  assert pipeline.user_error_line(RuntimeError("ValueError: a bug")) is None
  assert pipeline.user_error_line(ValueError("UserError: not ours")) is None


def test_a_video_already_in_another_split_fails_alone_and_gt_json_keeps_its_entry(videos,
                                                                                   tmp_path):
  out = tmp_path / "out"
  train = tmp_path / "train_videos"
  train.mkdir()
  shutil.copy(videos / "c.mkv", train / "c.mkv")
  pipeline.extract(small_cfg(train, out, split="train"))
  gt_before = json.loads((out / "gt.json").read_text())["database"]
  assert gt_before["c"]["split"] == "train"
  with pytest.raises(UserError, match=r"^1 of 3 videos failed; list in .*failures_test.json"):
    pipeline.extract(small_cfg(videos, out))  # long, b and c into split test
  failures = json.loads((out / "failures_test.json").read_text())
  assert [f["video"] for f in failures] == [str(videos / "c.mkv")]
  assert failures[0]["reason"] == (
      f"{videos / 'c.mkv'}: not extracted: a video named 'c' is in {out}'s split 'train' "
      f"already ({out / 'extract_status' / 'train' / 'c.json'}), and gt.json holds one entry "
      "per name: rename the file, or delete that split's features and status record to move it")
  database = json.loads((out / "gt.json").read_text())["database"]
  assert database["c"] == gt_before["c"] and {database[n]["split"] for n in ("long", "b")} \
      == {"test"}
  assert sorted(p.name for p in (out / "features" / "test" / "rgb").iterdir()) \
      == ["b.npy", "long.npy"]
  assert not (out / "extract_status" / "test" / "c.json").exists()


def test_a_failure_in_one_split_leaves_another_splits_entry(tmp_path):
  out = tmp_path / "out"
  for split, entry in (("test", {"subset": "test", "split": "test", "duration": 1.0,
                                 "annotations": []}), ("train", None)):
    (out / steps.STATUS_DIR / split).mkdir(parents=True)
    (out / steps.STATUS_DIR / split / "v.json").write_text(json.dumps({steps.GT_KEY: entry}))
  steps.merge_gt(str(out))
  assert json.loads((out / "gt.json").read_text())["database"]["v"]["split"] == "test"


def test_a_failed_rerun_keeps_the_labels_for_the_run_that_extracts_the_video_again(
    videos, tmp_path):
  """Found by a new user: a video damaged for one rerun lost its labels for good (its
  failed record held none, and the rerun after the repair made it subset 'test' without
  annotations), and its old features stayed beside a record that says it failed."""
  out = tmp_path / "out"
  given = {"subset": "validation", "annotations": [{"label": "A", "segment": [0.0, 1.0]}]}
  pipeline.extract(small_cfg(videos, out, annotations=write_annotations(
      tmp_path / "a.json", {"long": given})))
  good = (videos / "long.mp4").read_bytes()
  truncate(videos / "long.mp4", 0.02)  # not a video any more
  with pytest.raises(UserError, match="^1 of 3 videos failed"):
    pipeline.extract(small_cfg(videos, out))
  record = json.loads((out / steps.STATUS_DIR / "test" / "long.json").read_text())
  assert record["status"] == steps.FAILED and record[steps.GT_KEY] is None
  assert "long" not in json.loads((out / "gt.json").read_text())["database"]
  assert not (out / "features" / "test" / "rgb" / "long.npy").exists()
  (videos / "long.mp4").write_bytes(good)
  assert pipeline.extract(small_cfg(videos, out))["long"]["status"] == steps.OK
  entry = json.loads((out / "gt.json").read_text())["database"]["long"]
  assert {k: entry[k] for k in given} == given


def test_videos_whose_files_no_extraction_made_are_refused_and_those_files_kept(videos,
                                                                               tmp_path):
  """Found by a new user: extracting into a dataset folder replaced its features and its
  gt.json entry of a video of the same name, without a word."""
  out = tmp_path / "out"
  (out / "features" / "test" / "rgb").mkdir(parents=True)
  theirs = np.arange(8, dtype=np.float32).reshape(2, 4)
  np.save(out / "features" / "test" / "rgb" / "long.npy", theirs)
  entry = {"subset": "validation", "annotations": [{"label": "A", "segment": [0, 1]}]}
  write_annotations(out / "gt.json", {"b": entry, "other": entry})
  with pytest.raises(UserError, match="^2 of 3 videos failed"):
    pipeline.extract(small_cfg(videos, out))
  reasons = sorted(f["reason"] for f in json.loads((out / "failures_test.json").read_text()))
  assert reasons == [
      f"{videos / 'b.mkv'}: not extracted: {out} holds a gt.json entry of a video named 'b' "
      "that no extraction made (no status record), which this one would replace: move it "
      "away, or extract into another --output_dir",
      f"{videos / 'long.mp4'}: not extracted: {out} holds a feature file "
      f"({out / 'features' / 'test' / 'rgb' / 'long.npy'}) of a video named 'long' that no "
      "extraction made (no status record), which this one would replace: move it away, or "
      "extract into another --output_dir"]
  assert np.array_equal(np.load(out / "features" / "test" / "rgb" / "long.npy"), theirs)
  database = json.loads((out / "gt.json").read_text())["database"]
  assert database["b"] == entry and database["other"] == entry and "c" in database


def test_a_video_named_with_most_of_the_bytes_a_file_name_may_have_is_extracted(tmp_path):
  """Found by a new user: a legal name of 70 Japanese characters (214 bytes) failed with
  "File name too long" for its temporary files and progress marks, which add to it; a
  name whose status record would be too long fails alone, saying so."""
  videos, out = tmp_path / "videos", tmp_path / "out"
  videos.mkdir()
  long_name = "クリケットの試合のハイライト" * 5  # 70 characters, 210 bytes
  longest = "v" * (io_utils.MAX_NAME_BYTES - len(".json"))  # its status record: 255 bytes
  too_long = "w" * (io_utils.MAX_NAME_BYTES - len(".mp4"))
  not_text = os.fsdecode(b"caf\xe9")  # a Latin-1 name: not UTF-8 (review: a traceback)
  for name in (long_name, longest, too_long, not_text):
    write_video(videos / f"{name}.mp4", smooth_frames(40, 48, 64, seed=1), **H264)
  with pytest.raises(UserError, match="^2 of 4 videos failed"):
    pipeline.extract(small_cfg(videos, out))
  failures = json.loads((out / "failures_test.json").read_text())
  assert sorted(f["reason"] for f in failures) == [
      f"{videos}/caf\\xe9.mp4: not extracted: its name is not UTF-8 text, which gt.json "
      "and Beam need: rename it",
      f"{videos / too_long}.mp4: not extracted: its name is {len(too_long)} bytes long, and "
      f"its status record's ({too_long}.json) would be over the {io_utils.MAX_NAME_BYTES} "
      f"a file name may have: rename it (at most {io_utils.MAX_NAME_BYTES - len('.json')} "
      "bytes before the extension)"]
  database = json.loads((out / "gt.json").read_text())["database"]
  assert set(database) == {long_name, longest}
  assert features(out, long_name).shape == (2, contract.FEATURE_DIM)
  for name in ("d" * (io_utils.MAX_NAME_BYTES - 5), not_text):  # (detect --output's names)
    with io_utils.atomic_path(tmp_path / f"{name}.json") as tmp:
      pathlib.Path(tmp).write_text("{}")
    assert (tmp_path / f"{name}.json").read_text() == "{}"
  with pytest.raises(UserError, match="over the 255 bytes a file name may have"):
    io_utils.check_writable(tmp_path / f"{'d' * io_utils.MAX_NAME_BYTES}.json")


def test_annotation_keys_match_names_written_in_another_unicode_form(caplog):
  """Found by a new user: a file named "vélo à Paris" as macOS writes it (NFD: e + a
  combining accent) did not match the same key typed in an editor (NFC), and the run
  called the visible file absent."""
  nfc, nfd = "vélo à Paris", unicodedata.normalize("NFD", "vélo à Paris")
  assert nfc != nfd
  entry = {"subset": "validation", "annotations": []}
  caplog.set_level("INFO")
  assert pipeline.match_annotations({nfc: entry, "gone": entry}, [nfd, "b"], "a.json") == {
      nfd: entry}
  assert "a.json: 1 of 2 videos annotated; 1 annotated videos not in the video folder (gone)" \
      in caplog.text


def test_features_whose_record_was_not_written_are_extracted_again_not_refused(videos,
                                                                              tmp_path):
  """Found in review: features are written before their status record, so a run stopped
  in between (killed, or its record refused) left features without a record, and the
  next run refused the video as one no extraction made."""
  out = tmp_path / "out"
  write_json = storage.write_json

  def refuse_finished_records(path, obj, **kw):
    if isinstance(obj, dict) and obj.get("status") == steps.OK:
      raise UserError(f"{path}: cannot write (injected)")
    return write_json(path, obj, **kw)

  with mock.patch.object(steps.storage, "write_json", refuse_finished_records):
    with pytest.raises(UserError, match="^3 of 3 videos failed"):
      pipeline.extract(small_cfg(videos, out))
  assert (out / "features" / "test" / "rgb" / "long.npy").exists()
  records = pipeline.extract(small_cfg(videos, out))
  assert {r["status"] for r in records.values()} == {steps.OK}
  # A gt.json entry of extraction's form whose record is gone (a split moved away as
  # the "already in another split" line says) does not hold the name either.
  (out / steps.STATUS_DIR / "test" / "c.json").unlink()
  (out / "features" / "test" / "rgb" / "c.npy").unlink()
  database = json.loads((out / "gt.json").read_text())["database"]
  assert "split" in database["c"]
  records = storage.match(steps.status_records(str(out)))
  assert steps.not_made_here(str(out), records, "test", ["c"], database) == {}
  assert steps.not_made_here(str(out), records, "test", ["c"], {"c": {"subset": "x"}}) == {
      "c": "a gt.json entry"}
