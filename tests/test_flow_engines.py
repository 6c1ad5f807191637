"""The public flow entry (features.flow.compute_flow) and the --flow_engine choice (#21)."""

import dataclasses

import numpy as np
import pytest

from conftest import IN_MEMORY
from video_helpers import smooth_frames, write_video
from wtal_tf.config import ExtractConfig
from wtal_tf.features import beam_pipeline
from wtal_tf.features import extraction
from wtal_tf.features import flow
from wtal_tf.features import preprocess


def pairs(n=3, size=32, shift=1):
  gray = preprocess.gray(smooth_frames(n + 1, size + 8, size + 8, shift=shift), size + 8, size)
  return gray[:-1], gray[1:]


def test_the_opencv_engine_gives_the_bits_of_one_solver_per_pair():
  first, second = pairs(5)
  solver = flow.tvl1()
  expected = np.stack([solver.calc(a, b, None) for a, b in zip(first, second)])
  got = flow.compute_flow(first, second, engine="opencv")
  assert got.dtype == np.float32 and got.shape == (5, 32, 32, 2)
  np.testing.assert_array_equal(got, expected)


def test_the_keras_engine_agrees_with_opencv_on_a_translation():
  first, second = pairs(2, shift=2)
  ours, theirs = (flow.compute_flow(first, second, engine=e) for e in ("keras", "opencv"))
  assert ours.dtype == np.float32 and ours.shape == theirs.shape
  epe = np.linalg.norm(ours - theirs, axis=-1)
  assert epe.mean() < 0.05, epe.mean()
  assert abs(np.median(ours[:, 4:-4, 4:-4, 0]) - 2.0) < 0.25  # dx = +2 px


def test_compute_flow_rejects_bad_input():
  first, second = pairs(2)
  with pytest.raises(ValueError, match="uint8"):
    flow.compute_flow(first.astype(np.float32), second)
  with pytest.raises(ValueError, match="one shape"):
    flow.compute_flow(first[:1], second)
  with pytest.raises(ValueError, match="flow engine 'gpu'"):
    flow.compute_flow(first, second, engine="gpu")
  assert flow.compute_flow(first[:0], second[:0]).shape == (0, 32, 32, 2)


def test_the_engine_is_recorded_and_a_change_re_extracts(tmp_path):
  videos = tmp_path / "videos"
  videos.mkdir()
  write_video(videos / "v.mkv", smooth_frames(20, 48, 64))
  cfg = ExtractConfig(streams=("flow",), resize_shorter=40, crop_size=32, random_init_seed=0,
                      batch_segments=1, video_dir=str(videos), output_dir=str(tmp_path / "o"),
                      pipeline_args=IN_MEMORY)
  record = beam_pipeline.extract(cfg)["v"]
  assert record["provenance"]["flow_engine"] == "opencv"
  keras_cfg = dataclasses.replace(cfg, flow_engine="keras")
  record = beam_pipeline.extract(keras_cfg)["v"]
  assert record["status"] == "ok" and record["provenance"]["flow_engine"] == "keras"
  direct = extraction.Extractor(keras_cfg)(str(videos / "v.mkv")).features["flow"]
  np.testing.assert_array_equal(np.load(tmp_path / "o" / "features" / "test" / "flow" /
                                        "v.npy"), direct)
