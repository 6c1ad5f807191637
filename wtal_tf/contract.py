"""The data contract: what a segment is, what a feature is, and where a dataset keeps them.

Every other module imports these names; none restates them. A dataset on
disk (SPEC §6, layout "per_video") is

  DATA_DIR/gt.json                                   ActivityNet-style ground truth
  DATA_DIR/features/<split>/<stream>/<video>.npy     float32 [T, FEATURE_DIM]

W-TALC's layout ("wtalc") is DATA_DIR/WTALC_FEATURES with DATA_DIR/WTALC_ANNOTATIONS/.
Supplementary weakly-labelled clips (--extra_train) are DIR/EXTRA_LABELS with
DIR/<stream>/<video>.npy. This module imports only the standard library (os):
host code and device code alike depend on it.
"""

import os

FPS = 25.0  # frames per second at which videos are decoded and features extracted
SEGMENT_FRAMES = 16  # frames per feature segment (one feature vector)
SECONDS_PER_SEGMENT = SEGMENT_FRAMES / FPS  # 0.64 s
FEATURE_DIM = 1024  # channels of one segment's I3D feature (Mixed_5c)
STREAMS = ("rgb", "flow")

GT_FILE = "gt.json"
FLAGS_FILE = "flags.cfg"  # MODEL_DIR/flags.cfg: the experiment flags of its run, a flagfile
FEATURES_DIR = "features"
FEATURE_EXT = ".npy"
EXTRA_LABELS = "labels.csv"
EXTRA_LABEL_SEP = ";"
WTALC_FEATURES = "Thumos14reduced-I3D-JOINTFeatures.npy"
WTALC_ANNOTATIONS = "Thumos14reduced-Annotations"
STATUS_DIR = "extract_status"  # DATA_DIR/extract_status/<split>/<video>.json: how
# wtal_tf.extract made a video's features (its "provenance"), beside its outcome
STREAM_SETTINGS = {"flow": ("flow_engine",)}  # provenance settings of one stream's features only
STREAM_OF_SETTING = {k: s for s, keys in STREAM_SETTINGS.items() for k in keys}


def num_segments(num_frames: int) -> int:
  """Segments of a video of `num_frames` frames: the last incomplete one is dropped."""
  return num_frames // SEGMENT_FRAMES


def gt_path(data_dir: str) -> str:
  """DATA_DIR/gt.json."""
  return os.path.join(data_dir, GT_FILE)


def split_dir(data_dir: str, split: str) -> str:
  """DATA_DIR/features/<split>: one folder per stream below it."""
  return os.path.join(data_dir, FEATURES_DIR, split)


def stream_file(root: str, stream: str, name: str) -> str:
  """ROOT/<stream>/<video>.npy: one video's features of one stream below a split folder."""
  return os.path.join(root, stream, name + FEATURE_EXT)


def feature_path(data_dir: str, split: str, stream: str, name: str) -> str:
  """DATA_DIR/features/<split>/<stream>/<video>.npy."""
  return stream_file(split_dir(data_dir, split), stream, name)
