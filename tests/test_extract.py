"""Raw video -> features: decoding and 25 fps resampling, preprocessing, TV-L1, the Beam
pipeline and the extract CLI, on tiny generated lossless videos and random-init I3D."""

import dataclasses
import json
import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest

from conftest import IN_MEMORY, REPO
from video_helpers import INDEX_STEP, index_frames, smooth_frames, write_video
from wtal_tf.data import datasets as data
from wtal_tf.config import DataConfig, ExtractConfig
from wtal_tf.errors import UserError
from wtal_tf import contract
from wtal_tf.features import beam_pipeline as pipeline
from wtal_tf.features import beam_steps as steps
from wtal_tf.features import extraction, flow, preprocess, provenance, video

SHORTER, CROP = 40, 32  # small test geometry (defaults: 256, 224)


def small_cfg(**kw):
  return ExtractConfig(**{"streams": ("rgb",), "resize_shorter": SHORTER, "crop_size": CROP,
                          "random_init_seed": 0, "batch_segments": 2, **kw})


@pytest.fixture(scope="module")
def rgb_extractor():
  return extraction.Extractor(small_cfg())


# ---------------------------------------------------------------- decoding


def decoded_indices(path):
  return [int(f[0, 0, 0]) // INDEX_STEP for f in video.frames(path)]


def test_25fps_video_decodes_bit_exactly(tmp_path):
  frames = np.random.default_rng(0).integers(0, 256, (7, 48, 64, 3), dtype=np.uint8)
  out = np.stack(list(video.frames(write_video(tmp_path / "v.mkv", frames, 25))))
  np.testing.assert_array_equal(out, frames)


@pytest.mark.parametrize("fps, n, expected", [
    # 50 fps: t_k = k/25 = source frame 2k exactly.
    (50, 20, [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]),
    # 30 fps (0.667 s): 17 targets k/25 < 20/30; last source frame with i/30 <= k/25.
    (30, 20, [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 18, 19]),
    # 10 fps (0.5 s): 13 targets; each source frame held for 2.5 output frames.
    (10, 5, [0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4]),
])
def test_resampling_to_25fps_keeps_the_nearest_previous_frame(tmp_path, fps, n, expected):
  path = write_video(tmp_path / f"v{fps}.mkv", index_frames(n), fps)
  assert decoded_indices(path) == expected


def test_blocks_carry_the_next_frame_and_drop_the_last_frames(tmp_path):
  path = write_video(tmp_path / "v.mkv", index_frames(41), 25)
  blocks = video.Blocks(path, 16)
  got = [(b.frames[:, 0, 0, 0] // INDEX_STEP).tolist() + [None if b.next_frame is None
                                                    else int(b.next_frame[0, 0, 0]) // INDEX_STEP]
         for b in blocks]
  assert got == [list(range(16)) + [16], list(range(16, 32)) + [32]]  # frames 32..40 dropped
  assert blocks.num_frames == 41
  exact = video.Blocks(write_video(tmp_path / "w.mkv", index_frames(16), 25), 16)
  assert [b.next_frame for b in exact] == [None]


def test_unusable_videos_are_user_errors_naming_the_file(tmp_path):
  garbage = tmp_path / "garbage.mp4"
  garbage.write_bytes(np.random.default_rng(0).bytes(4000))
  empty = write_video(tmp_path / "empty.avi", np.zeros((0, 16, 16, 3), np.uint8))
  short = write_video(tmp_path / "short.mkv", index_frames(10))
  for path, reason in ((str(garbage), "cannot read as a video"), (empty, "no frames"),
                       (short, "too short: 10 frames")):
    with pytest.raises(UserError, match=f"^{path}: {reason}"):
      list(video.Blocks(path, 16))


# ---------------------------------------------------------------- preprocessing


def bilinear_numpy(image, out_h, out_w):
  """Half-pixel-centre bilinear resize with edge clamping, written out in numpy."""
  def axis(n_in, n_out):
    src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, src - lo
  y0, y1, wy = axis(image.shape[0], out_h)
  x0, x1, wx = axis(image.shape[1], out_w)
  img = image.astype(np.float64)
  top = img[y0][:, x0] * (1 - wx)[None, :, None] + img[y0][:, x1] * wx[None, :, None]
  bottom = img[y1][:, x0] * (1 - wx)[None, :, None] + img[y1][:, x1] * wx[None, :, None]
  return top * (1 - wy)[:, None, None] + bottom * wy[:, None, None]


@pytest.mark.parametrize("height, width, shorter, crop", [
    (48, 64, 40, 32),  # landscape, downscale: resized to 40 x 53
    (30, 20, 50, 44),  # portrait, upscale: resized to 75 x 50
])
def test_rgb_preprocessing_matches_numpy(height, width, shorter, crop):
  frames = np.random.default_rng(1).integers(0, 256, (2, height, width, 3), dtype=np.uint8)
  out_h, out_w = (shorter, round(width * shorter / height)) if height <= width else (
      round(height * shorter / width), shorter)
  assert preprocess.resized_shape(height, width, shorter) == (out_h, out_w)
  top, left = (out_h - crop) // 2, (out_w - crop) // 2
  expected = np.stack([bilinear_numpy(f, out_h, out_w)[top:top + crop, left:left + crop]
                       for f in frames]) / 127.5 - 1
  got = preprocess.rgb(frames, shorter, crop)
  assert got.dtype == np.float32 and got.shape == (2, crop, crop, 3)
  np.testing.assert_allclose(got, expected, atol=1e-4)
  assert got.min() >= -1 and got.max() <= 1
  gray = preprocess.gray(frames, shorter, crop)
  luma = (expected + 1) * 127.5 @ np.array([0.299, 0.587, 0.114])
  assert gray.dtype == np.uint8 and np.abs(gray - luma).max() <= 0.51


def test_frames_of_different_sizes_each_reach_the_same_crop():
  """A stream whose frame size changes midway (video.Block.frames is then a list)."""
  rng = np.random.default_rng(2)
  frames = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in
            ((48, 64, 3), (64, 48, 3), (30, 20, 3))]
  got = preprocess.rgb(frames, 40, 32)
  assert got.shape == (3, 32, 32, 3)
  for k, frame in enumerate(frames):
    np.testing.assert_array_equal(got[k], preprocess.rgb(frame[None], 40, 32)[0])
  np.testing.assert_array_equal(preprocess.gray(frames, 40, 32)[1],
                                preprocess.gray(frames[1][None], 40, 32)[0])


# ---------------------------------------------------------------- TV-L1 flow


def test_flow_clip_and_scale_rule():
  pixels = np.array([-35.0, -20.0, -7.5, 0.0, 4.0, 20.0, 21.5], np.float32)
  np.testing.assert_allclose(flow.to_unit_range(pixels),
                             [-1.0, -1.0, -0.375, 0.0, 0.2, 1.0, 1.0], atol=1e-7)


def test_tvl1_flow_of_a_translating_pattern():
  frames = smooth_frames(5, 40, 40, shift=2)  # moves 2 px right per frame
  gray = preprocess.gray(frames, 40, 32)
  fields = flow.segment_flow(gray[:4], gray[4])
  assert fields.shape == (4, 32, 32, 2) and fields.dtype == np.float32
  inner = fields[:, 4:-4, 4:-4] * flow.FLOW_BOUND  # back to pixels, away from the borders
  assert abs(np.median(inner[..., 0]) - 2.0) < 0.25  # dx = +2 px
  assert abs(np.median(inner[..., 1])) < 0.25  # dy = 0
  # Without a next frame (video ends on a segment boundary) the last flow is repeated.
  last = flow.segment_flow(gray[:4], None)
  np.testing.assert_array_equal(last[3], last[2])
  np.testing.assert_allclose(last[:3], fields[:3], atol=1e-6)


# ---------------------------------------------------------------- one video


def test_extractor_equals_a_hand_assembled_forward_pass(tmp_path, rgb_extractor):
  frames = smooth_frames(50, 48, 64)  # 3 segments, frames 48-49 dropped
  path = write_video(tmp_path / "v.mkv", frames)
  result = rgb_extractor(path)  # batch_segments=2: batches of 2 and 1
  assert result.num_frames == 50 and result.duration == pytest.approx(2.0)
  clips = preprocess.rgb(frames[:48], SHORTER, CROP).reshape(3, 16, CROP, CROP, 3)
  expected = rgb_extractor.encoders["rgb"](clips)
  assert result.features["rgb"].shape == (3, contract.FEATURE_DIM)
  assert result.features["rgb"].dtype == np.float32
  np.testing.assert_allclose(result.features["rgb"], expected, rtol=1e-4, atol=1e-5)


def test_two_streams_equal_hand_assembled_rgb_and_flow_inputs(tmp_path):
  """Flow of frame i is TV-L1(i -> i+1); with 32 frames the last frame has no successor and
  repeats the previous flow, with 33 it uses frame 32."""
  extractor = extraction.Extractor(small_cfg(streams=("rgb", "flow")))
  for n in (32, 33):
    frames = smooth_frames(n, 48, 64, shift=1, seed=n)
    result = extractor(write_video(tmp_path / f"v{n}.mkv", frames))
    gray = preprocess.gray(frames, SHORTER, CROP)
    solver = flow.tvl1()
    fields = [solver.calc(gray[i], gray[i + 1], None) for i in range(min(n, 33) - 1)]
    if n == 32:
      fields.append(fields[-1])
    flows = (np.clip(np.stack(fields[:32]), -20, 20) / 20).reshape(2, 16, CROP, CROP, 2)
    rgbs = preprocess.rgb(frames[:32], SHORTER, CROP).reshape(2, 16, CROP, CROP, 3)
    np.testing.assert_allclose(result.features["flow"], extractor.encoders["flow"](flows),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result.features["rgb"], extractor.encoders["rgb"](rgbs),
                               rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- Beam pipeline


def test_pipeline_options_pass_through():
  opts = pipeline.pipeline_options(["--runner=FlinkRunner", "--flink_master=host:8081"])
  assert opts.get_all_options()["runner"] == "FlinkRunner"
  assert opts.get_all_options()["flink_master"] == "host:8081"
  default = pipeline.pipeline_options([]).get_all_options()
  assert default["runner"] == "DirectRunner"
  assert default["direct_running_mode"] == "multi_threading"  # workers: the driver's threads
  assert default["direct_num_workers"] == os.cpu_count()
  assert pipeline.pipeline_options(list(IN_MEMORY)).get_all_options()[
      "direct_running_mode"] == "in_memory"
  with pytest.raises(UserError, match="unknown flags --batch_segment: neither"):
    pipeline.pipeline_options(["--batch_segment=4"])  # a misspelt wtal_tf flag


def test_pipeline_equals_direct_call_skips_on_rerun_and_loads_as_dataset(tmp_path,
                                                                         rgb_extractor):
  videos = tmp_path / "videos"
  videos.mkdir()
  lengths = {"a": 40, "b": 33, "c": 16}
  for k, (name, n) in enumerate(lengths.items()):
    write_video(videos / f"{name}.mkv", smooth_frames(n, 48, 64, seed=k))
  out = tmp_path / "out"
  cfg = small_cfg(video_dir=str(videos), output_dir=str(out), pipeline_args=IN_MEMORY)
  records = pipeline.extract(cfg)
  assert {r["status"] for r in records.values()} == {"ok"}
  for name, n in lengths.items():
    got = np.load(out / "features" / "test" / "rgb" / f"{name}.npy")
    assert got.dtype == np.float32 and got.shape == (n // 16, contract.FEATURE_DIM)
    direct = rgb_extractor(str(videos / f"{name}.mkv")).features["rgb"]
    np.testing.assert_array_equal(got, direct)
  gt = json.loads((out / "gt.json").read_text())["database"]
  assert gt == {name: {"subset": "test", "split": "test", "duration": n / 25,
                       "annotations": []} for name, n in lengths.items()}
  assert not (out / "failures_test.json").exists()
  # Rerun, with --video_dir spelled differently: every video validates and is
  # skipped, its feature file untouched (the skip rule: tests/test_beam_pipeline.py).
  mtimes = {p: p.stat().st_mtime_ns for p in (out / "features" / "test" / "rgb").iterdir()}
  (out / "gt.json").unlink()  # written again from the status records
  with mock.patch.object(pipeline, "run_pipeline", side_effect=AssertionError("Beam started")):
    records = pipeline.extract(dataclasses.replace(cfg, video_dir=str(videos) + os.sep))
  assert {r["status"] for r in records.values()} == {"skipped"}
  assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
  assert json.loads((out / "gt.json").read_text())["database"] == gt
  # Without annotations, the dataset reads with the model's class list.
  (tmp_path / "classes.txt").write_text("A\nB\n")
  ds = data.load_dataset(DataConfig(data_dir=str(out), streams=("rgb",),
                                    class_list=str(tmp_path / "classes.txt")),
                         include_train=False)
  assert {v.name: v.num_segments for v in ds.test} == {"a": 2, "b": 2, "c": 1}


def test_extract_cli_bad_videos_fail_alone_with_one_line(tmp_path):
  videos = tmp_path / "videos"
  videos.mkdir()
  write_video(videos / "good.mkv", smooth_frames(20, 48, 64))
  (videos / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
  write_video(videos / "empty.avi", np.zeros((0, 48, 64, 3), np.uint8))
  write_video(videos / "short.mkv", smooth_frames(10, 48, 64))
  (videos / ".hidden.mp4").write_bytes(b"")  # ignored, and counted: a hidden file,
  (videos / "notes.txt").write_text("x")  # a file of another extension
  out = tmp_path / "out"
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
  proc = subprocess.run(
      [sys.executable, "-m", "wtal_tf.extract", f"--video_dir={videos}", f"--output_dir={out}",
       "--streams=rgb", "--random_init_seed=0", f"--resize_shorter={SHORTER}",
       f"--crop_size={CROP}", *IN_MEMORY],  # in_memory: one worker (the bench runs the
      # default multi_threading mode)
      capture_output=True, text=True, cwd=REPO, env=env)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert errors == [f"error: 3 of 4 videos failed; list in {out}/failures_test.json"]
  for name, reason in (("garbage.mp4", "cannot read as a video"), ("empty.avi", "no frames"),
                       ("short.mkv", "too short")):
    lines = [l for l in proc.stderr.splitlines() if f"{videos / name}: {reason}" in l]
    assert len(lines) == 1, (name, proc.stderr[-3000:])
  failures = json.loads((out / "failures_test.json").read_text())
  assert sorted(os.path.basename(f["video"]) for f in failures) == [
      "empty.avi", "garbage.mp4", "short.mkv"]
  assert np.load(out / "features" / "test" / "rgb" / "good.npy").shape == (1, contract.FEATURE_DIM)
  assert set(json.loads((out / "gt.json").read_text())["database"]) == {"good"}
  assert "4/4 videos done" in proc.stderr
  assert "extract test: 4 videos (2 other files ignored)" in proc.stderr


def test_real_video_through_the_whole_extraction_is_playing_cricket():
  """../shared's UCF101 clip, decoded, resampled and preprocessed by wtal_tf.features with the
  packaged Kinetics-400 weights: every segment's top logit is "playing cricket"."""
  from conftest import shared_path  # pylint: disable=import-outside-toplevel
  path = shared_path("videos", "cricket.mp4")
  labels = shared_path("videos", "kinetics400_labels.txt").read_text().splitlines()
  extractor = extraction.Extractor(ExtractConfig(streams=("rgb",), batch_segments=4))
  result = extractor(str(path))
  assert result.num_frames == 79 and result.features["rgb"].shape == (4, contract.FEATURE_DIM)
  logits = extractor.encoders["rgb"].logits(result.features["rgb"])
  assert [labels[k] for k in logits.argmax(axis=1)] == ["playing cricket"] * 4


def test_unloadable_weights_fail_each_video_by_name(tmp_path):
  cfg = small_cfg(random_init_seed=None, rgb_checkpoint=str(tmp_path / "missing.ckpt"),
                  output_dir=str(tmp_path / "out"))
  fn = steps.ExtractChunkFn(cfg, "run")
  fn.setup()
  made = {"settings": provenance.settings(cfg, {"rgb": provenance.weights_identity(cfg, "rgb")})}
  for name in ("v", "w"):  # a worker: each video fails, the UserError not raised inside Beam
    path = str(tmp_path / f"{name}.mkv")
    task = {"video": path, "name": name, "index": 0, "start": 0, "count": None, "made": made}
    ((got, result),) = fn.process(task)
    assert got == name
    assert result["error"].startswith(f"{path}: not extracted: {tmp_path / 'missing.ckpt'}")
