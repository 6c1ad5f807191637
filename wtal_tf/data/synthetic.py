"""The embedded default dataset: THUMOS14-shaped synthetic two-stream features.

Deterministic from a seed. Written in the per-video layout (SPEC §6 (a)) so it
exercises the same readers as real data. Statistics follow THUMOS14's
validation/test annotations (constants below, measured from the official
annotation files): video durations and action lengths are log-normal, the
number of instances per video is skewed and class dependent, ~13% of videos
have two classes.

Features are built so that background modeling matters:
- each *venue* (scene) is shared by a group of classes (VENUES) and fills the
  background of their videos (usually; else a random venue), so background
  segments correlate with the class without identifying it;
- a few *context* segments before each action resemble it (run-up);
- class evidence peaks at a discriminative moment of each action, while
  class-agnostic motion spans all of it (so a T-CAM sees only part of an
  action, as in the paper's contrast with STPN);
- class-agnostic *motion* appears in actions and, as distractors, in
  background (camera motion), mostly in the flow stream;
- temporally correlated noise on everything.
"""

import dataclasses
import os

import numpy as np

from wtal_tf import io_utils
from wtal_tf import contract
from wtal_tf.data import groundtruth
from wtal_tf.errors import UserError

# THUMOS14's 20 classes and their validation-set instance counts (official annotations).
THUMOS14_CLASSES = {
    "BaseballPitch": 30, "BasketballDunk": 303, "Billiards": 81, "CleanAndJerk": 42,
    "CliffDiving": 143, "CricketBowling": 178, "CricketShot": 181, "Diving": 499,
    "FrisbeeCatch": 103, "GolfSwing": 31, "HammerThrow": 199, "HighJump": 271,
    "JavelinThrow": 192, "LongJump": 163, "PoleVault": 120, "Shotput": 70,
    "SoccerPenalty": 66, "TennisSwing": 69, "ThrowDiscus": 120, "VolleyballSpiking": 146,
}
# Venues shared by groups of classes: the background scene is correlated with
# the class but does not identify it (as a stadium hosts every throw and jump).
VENUES = (
    ("HighJump", "LongJump", "PoleVault", "JavelinThrow", "HammerThrow", "ThrowDiscus",
     "Shotput"),
    ("Diving", "CliffDiving"),
    ("CricketBowling", "CricketShot"),
    ("BasketballDunk", "VolleyballSpiking", "TennisSwing"),
    ("BaseballPitch", "SoccerPenalty", "FrisbeeCatch", "GolfSwing"),
    ("Billiards", "CleanAndJerk"),
)

# log-normal parameters (mean, std of the natural log), in seconds.
DURATION_LOG = {"validation": (4.94, 0.92), "test": (5.02, 0.84)}
DURATION_RANGE_S = (8.0, 1700.0)
INSTANCE_LENGTH_LOG = (1.05, 0.83)
MULTI_LABEL_FRACTION = 0.13
MAX_FOREGROUND_FRACTION = 0.6
CONTEXT_SEGMENTS = (1, 4)  # run-up segments before an action, drawn in [lo, hi)
MICRO_DURATION_S = (6.0, 15.0)
MICRO_FOREGROUND = (0.5, 0.9)
MICRO_DIR = "micro"  # under the dataset dir
MICRO_INSTANCES = (1, 3)  # instances per microvideo, drawn in [lo, hi)
MEAN_INSTANCES_PER_VIDEO = 15.0  # over classes, weighted by THUMOS14_CLASSES' counts
INSTANCES_DISPERSION = 1.2  # negative-binomial n of the instances per video beyond the first
MIN_EXTRA_INSTANCES = 0.1  # floor of their mean, for the rarest classes
MOTION_WEIGHT = {"rgb": 0.3, "flow": 1.0}  # class-agnostic motion per stream: mostly in flow
PEAK_POSITION = (0.2, 0.8)  # discriminative moment, as a fraction of the action's length
MIN_PEAK_WIDTH = 0.5  # segments: the narrowest class-evidence peak
CONTEXT_RAMP_START = 0.3  # run-up evidence at its first segment, rising to 1 at the action
DISTRACTOR_SEGMENTS = 60.0  # background motion bursts: one per this many segments, on average
DISTRACTOR_LENGTH = (2, 8)  # segments of a burst, drawn in [lo, hi)
DISTRACTOR_MOTION = 0.7  # a burst's motion level (an action's is 1)
SCENE_DIMMING = 0.5  # the scene's share lost during an action


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  num_train: int = 200
  num_test: int = 210
  num_micro: int = 0  # microvideos for --extra_train (written under micro/)
  feature_dim: int = 128
  seed: int = 0
  fps: float = contract.FPS
  segment_frames: int = contract.SEGMENT_FRAMES
  action_amplitude: float = 2.5
  scene_amplitude: float = 0.5
  context_amplitude: float = 1.0
  motion_amplitude: float = 0.8
  class_floor: float = 0.25  # class evidence away from the discriminative moment (x amplitude)
  discriminative_width: float = 0.2  # std of the class-evidence peak, in instance lengths
  scene_variation: float = 0.25  # per-video deviation from the venue
  venue_match: float = 0.8  # probability that a video is shot at its class's venue
  noise: float = 1.0
  noise_correlation: float = 0.5  # AR(1) coefficient along time

  @property
  def seconds_per_segment(self) -> float:
    return self.segment_frames / self.fps


class _World:
  """Class prototypes shared by every video of the dataset."""

  def __init__(self, cfg: SyntheticConfig, rng: np.random.Generator):
    c, d = len(THUMOS14_CLASSES), cfg.feature_dim
    self.cfg = cfg
    self.action = {s: rng.standard_normal((c, d)) for s in contract.STREAMS}
    self.scene = {s: rng.standard_normal((len(VENUES), d)) for s in contract.STREAMS}
    names = list(THUMOS14_CLASSES)
    self.venue_of = np.zeros(c, np.int64)
    for k, group in enumerate(VENUES):
      self.venue_of[[names.index(n) for n in group]] = k
    self.motion = {s: rng.standard_normal(d) for s in contract.STREAMS}
    counts = np.array(list(THUMOS14_CLASSES.values()), np.float64)
    self.instances_per_video = counts / counts.sum() * MEAN_INSTANCES_PER_VIDEO * c

  def features(self, rng, labels, t, instances):
    """[T, d] per stream for one video with instances [(class, start, end)]."""
    cfg = self.cfg
    venue = (self.venue_of[labels[0]] if rng.random() < cfg.venue_match
             else int(rng.integers(len(VENUES))))
    out = {}
    fg = np.zeros(t)
    profile = {s: np.zeros((t, cfg.feature_dim)) for s in contract.STREAMS}
    motion = np.zeros(t)
    for c, s0, e0 in instances:
      length = e0 - s0 + 1
      # Class evidence peaks around a discriminative moment; the class-agnostic
      # motion covers the whole instance.
      peak = rng.uniform(*PEAK_POSITION) * (length - 1)
      width = max(cfg.discriminative_width * length, MIN_PEAK_WIDTH)
      ramp = cfg.class_floor + (1 - cfg.class_floor) * np.exp(
          -0.5 * ((np.arange(length) - peak) / width) ** 2)
      for s in profile:
        profile[s][s0:e0 + 1] += cfg.action_amplitude * ramp[:, None] * self.action[s][c]
      motion[s0:e0 + 1] = 1.0
      fg[s0:e0 + 1] = 1.0
      k = int(rng.integers(*CONTEXT_SEGMENTS))
      lo = max(0, s0 - k)
      for s in profile:
        ctx = (np.linspace(CONTEXT_RAMP_START, 1.0, s0 - lo)[:, None] if s0 > lo
               else np.zeros((0, 1)))
        outside = fg[lo:s0, None] == 0
        profile[s][lo:s0] += cfg.context_amplitude * ctx * self.action[s][c] * outside
    # distractor motion bursts in the background
    for _ in range(int(rng.poisson(t / DISTRACTOR_SEGMENTS))):
      s0 = int(rng.integers(0, t))
      e0 = min(t, s0 + int(rng.integers(*DISTRACTOR_LENGTH)))
      motion[s0:e0] = np.maximum(motion[s0:e0], DISTRACTOR_MOTION * (fg[s0:e0] == 0))
    for s in contract.STREAMS:
      scene = self.scene[s][venue] + cfg.scene_variation * rng.standard_normal(cfg.feature_dim)
      scene_weight = cfg.scene_amplitude * (1.0 - SCENE_DIMMING * fg)[:, None]
      noise = rng.standard_normal((t, cfg.feature_dim))
      for i in range(1, t):  # AR(1) temporal correlation with unit variance
        noise[i] = cfg.noise_correlation * noise[i - 1] + np.sqrt(
            1 - cfg.noise_correlation ** 2) * noise[i]
      x = (scene_weight * scene + profile[s]
           + cfg.motion_amplitude * MOTION_WEIGHT[s] * motion[:, None] * self.motion[s]
           + cfg.noise * noise)
      out[s] = x.astype(np.float32)
    return out


def _place(rng, t, lengths):
  """Non-overlapping starts for instances of `lengths` in [0, t)."""
  free = t - sum(lengths)
  cuts = np.sort(rng.integers(0, free + 1, size=len(lengths)))
  starts, offset = [], 0
  for cut, length in zip(cuts, lengths):
    starts.append(int(cut + offset))
    offset += length
  return starts


def _video(world: _World, rng, name, subset, duration_log, micro=False, classes_weights=None):
  cfg = world.cfg
  c = len(THUMOS14_CLASSES)
  sps = cfg.seconds_per_segment
  if micro:
    duration = rng.uniform(*MICRO_DURATION_S)
  else:
    duration = float(np.clip(np.exp(rng.normal(*duration_log)), *DURATION_RANGE_S))
  t = max(1, int(round(duration / sps)))
  duration = t * sps
  labels = [int(rng.choice(c, p=classes_weights))]
  if not micro and rng.random() < MULTI_LABEL_FRACTION:
    labels.append(int(rng.choice([k for k in range(c) if k != labels[0]])))
  if micro:
    budget = int(round(t * rng.uniform(*MICRO_FOREGROUND)))
    n = int(rng.integers(*MICRO_INSTANCES))
  else:
    budget = int(t * MAX_FOREGROUND_FRACTION)
    mean = np.mean([world.instances_per_video[l] for l in labels])
    n = 1 + int(rng.negative_binomial(INSTANCES_DISPERSION, INSTANCES_DISPERSION / (
        INSTANCES_DISPERSION + max(mean - 1, MIN_EXTRA_INSTANCES))))
  lengths = [max(1, int(round(np.exp(rng.normal(*INSTANCE_LENGTH_LOG)) / sps))) for _ in range(n)]
  if micro:
    lengths = [max(1, budget // n)] * n
  while len(lengths) > 1 and sum(lengths) > budget:
    lengths.pop()
  lengths[0] = min(lengths[0], t)
  starts = _place(rng, t, lengths)
  inst_classes = [labels[k % len(labels)] for k in range(len(lengths))]
  instances = [(cl, s, s + L - 1) for cl, s, L in zip(inst_classes, starts, lengths)]
  feats = world.features(rng, labels, t, instances)
  names = list(THUMOS14_CLASSES)
  gt = groundtruth.GTVideo(name, subset, duration, tuple(
      groundtruth.Instance(names[cl], round(s * sps, 4), round((e + 1) * sps, 4))
      for cl, s, e in sorted(instances, key=lambda x: x[1])))
  return gt, feats


def _check_new(output_dir: str) -> None:
  """A UserError unless `output_dir` is absent and can be made (e.g. not below a file)."""
  if os.path.exists(output_dir):
    raise UserError(f"{output_dir}: already exists; remove it to generate again")
  io_utils.check_writable(output_dir, "dataset folder")


def generate_microvideos(cfg: SyntheticConfig, output_dir: str) -> str:
  """Writes cfg.num_micro microvideos for --extra_train to a new output_dir (atomically)."""
  _check_new(output_dir)
  with io_utils.atomic_dir(output_dir) as tmp:
    _microvideos(cfg, tmp)
  return output_dir


def generate(cfg: SyntheticConfig, output_dir: str) -> str:
  """Writes the dataset to a new output_dir (atomically: built aside, then renamed)."""
  _check_new(output_dir)
  with io_utils.atomic_dir(output_dir) as tmp:
    rng = np.random.default_rng(cfg.seed)
    world = _World(cfg, rng)
    videos = []
    for subset, split, count in (("validation", "train", cfg.num_train),
                                 ("test", "test", cfg.num_test)):
      for k in range(count):
        name = f"video_{subset}_{k:07d}"
        gt, feats = _video(world, rng, name, subset, DURATION_LOG[subset])
        for s, x in feats.items():
          path = contract.feature_path(tmp, split, s, name)
          os.makedirs(os.path.dirname(path), exist_ok=True)
          np.save(path, x)
        videos.append(gt)
    io_utils.write_json(contract.gt_path(tmp), groundtruth.to_activitynet(
        videos, f"wtal_tf synthetic THUMOS14-shaped, seed {cfg.seed}"), indent=1)
    if cfg.num_micro:
      _microvideos(cfg, os.path.join(tmp, MICRO_DIR))
  return output_dir


def _microvideos(cfg: SyntheticConfig, directory: str):
  """Short clips, high foreground ratio, more clips for classes with few instances.

  Same world (class prototypes, venues) as the dataset of the same seed; the
  clips come from a separate random stream.
  """
  world = _World(cfg, np.random.default_rng(cfg.seed))
  rng = np.random.default_rng([cfg.seed, 1])
  inv = 1.0 / np.array(list(THUMOS14_CLASSES.values()), np.float64)
  weights = inv / inv.sum()
  rows = ["video,labels"]
  for k in range(cfg.num_micro):
    name = f"micro_{k:07d}"
    gt, feats = _video(world, rng, name, "micro", None, micro=True, classes_weights=weights)
    for s, x in feats.items():
      path = contract.stream_file(directory, s, name)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      np.save(path, x)
    rows.append(f"{name},{contract.EXTRA_LABEL_SEP.join(gt.labels)}")
  io_utils.write_text(os.path.join(directory, contract.EXTRA_LABELS), "\n".join(rows) + "\n")
