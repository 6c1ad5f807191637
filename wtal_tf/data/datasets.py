"""Datasets of per-video I3D features: readers for both layouts and validation.

Layout (a), "per_video": `DATA_DIR/gt.json` and
`DATA_DIR/features/{train,test}/{rgb,flow}/<video>.npy`, float [T, d] each.
Layout (b), "wtalc": `DATA_DIR/Thumos14reduced-I3D-JOINTFeatures.npy` (object
array of [T, 2 d], RGB then flow) with `DATA_DIR/Thumos14reduced-Annotations/*.npy`.

Training videos carry only their video-level labels: temporal segments are
kept apart (`Dataset.test_gt`) and used for evaluation only.
"""

import csv
import dataclasses
import json
import os
import re
from typing import Optional, Sequence

from absl import logging
import numpy as np

from wtal_tf.config import DataConfig
from wtal_tf import contract
from wtal_tf import io_utils
from wtal_tf.data import groundtruth
from wtal_tf.data import made as made_lib
from wtal_tf.data import npy
from wtal_tf.contract import EXTRA_LABEL_SEP, EXTRA_LABELS, WTALC_ANNOTATIONS, WTALC_FEATURES
from wtal_tf.errors import UserError, reading

REMOTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")  # a path of another filesystem (s3://..)
FLOAT32_MAX = float(np.finfo(np.float32).max)  # features are read as float32
ID_PREFIX = "v_"  # of ActivityNet's video ids in some releases (v_<YouTube id>), not others
DURATION_SLACK_SEGMENTS = 2  # a video's features may span its duration give or take this
DURATION_SLACK_FRACTION = 0.1  # ... or this fraction of it, whichever is more
LAYOUT_HELP = (f"expected DATA_DIR/{contract.GT_FILE} and DATA_DIR/{contract.FEATURES_DIR}/"
               f"<split>/<stream>/<video>{contract.FEATURE_EXT} (float32 "
               f"[T, {contract.FEATURE_DIM}], as BaS-Net/UM/CoLA release THUMOS14), or with "
               f"--layout=wtalc W-TALC's {WTALC_FEATURES} and {WTALC_ANNOTATIONS}/ (README, "
               "\"Datasets\")")


def load_npy(path: str, what: str, allow_pickle: bool = False) -> np.ndarray:
  """A .npy array, with one clear error naming the file: missing, unreadable or not .npy.

  Numeric arrays go through npy.read (no ast, safe in tf.data's reader
  threads); pickled object arrays (W-TALC) through np.load.
  """
  if not os.path.isfile(path):
    raise UserError(f"{path}: {what} not found")
  try:
    if allow_pickle:
      return np.load(path, allow_pickle=True, encoding="bytes")
    return npy.read(path)
  except (ValueError, OSError, EOFError) as e:
    raise UserError(f"{path}: cannot read as .npy ({e})") from None


class FeatureSource:
  """Loads the features of one video: {stream: float32 [T, d]}."""

  def path(self, name: str, stream: str) -> str:
    """A human-readable location of one video's stream, for messages."""
    raise NotImplementedError

  def made(self, name: str) -> Optional[dict]:  # pylint: disable=unused-argument
    """How wtal_tf.extract made the video's features (its status record's provenance);
    None when no record says."""
    return None

  def load_stream(self, name: str, stream: str) -> np.ndarray:
    raise NotImplementedError


class PerVideoSource(FeatureSource):
  """`ROOT/<stream>/<video>.npy` files (status_root: the folder of their status records
  when wtal_tf.extract wrote them)."""

  def __init__(self, root: str, status_root: Optional[str] = None):
    self.root, self.status_root = root, status_root

  def made(self, name):
    if not self.status_root:
      return None
    try:
      with open(os.path.join(self.status_root, name + ".json"), encoding="utf-8") as f:
        made = json.load(f).get("provenance")
    except (OSError, ValueError, AttributeError):  # (none, unreadable, not an object)
      return None
    return made if isinstance(made, dict) else None

  def path(self, name, stream):
    return contract.stream_file(self.root, stream, name)

  def load_stream(self, name, stream):
    path = self.path(name, stream)
    try:
      return load_npy(path, "feature file")
    except UserError:  # (its own error, unless no video here has the stream, or the split)
      features = os.path.dirname(os.path.normpath(self.root))
      splits = sorted(d for d in io_utils.entries(features)
                      if os.path.isdir(os.path.join(features, d)))
      if not os.path.isdir(self.root) and splits:
        raise LayoutError(f"{path}: not found: {features} has no {os.path.basename(self.root)} "
                          f"folder, only {','.join(splits)} (--train_split and --test_split "
                          "choose)") from None
      alias = name[len(ID_PREFIX):] if name.startswith(ID_PREFIX) else ID_PREFIX + name
      if os.path.isfile(self.path(alias, stream)):  # (ActivityNet's releases differ)
        raise LayoutError(
            f"{path}: not found, but {self.path(alias, stream)} is: the ground truth names "
            f"the video {name!r}, its feature file {alias!r}: rename the feature files or the "
            "ground truth's videos, so that they agree") from None
      there = [s for s in contract.STREAMS if os.path.isdir(os.path.join(self.root, s))]
      if there and stream not in there:
        raise UserError(f"{path}: not found: {self.root} has no {stream} features, only "
                        f"{','.join(there)} (--streams chooses)") from None
      raise


class LayoutError(UserError):
  """A file missing because the dataset is laid out otherwise (its every video's file is):
  --skip_invalid_videos does not skip it."""


class WtalcSource(FeatureSource):
  """W-TALC's joint array: row halves are RGB then flow."""

  def __init__(self, path: str, features: np.ndarray, index: dict[str, int]):
    self._path, self._features, self._index = path, features, index

  def path(self, name, stream):
    return f"{self._path}[{name}].{stream}"

  def load_stream(self, name, stream):
    joint = np.asarray(self._features[self._index[name]])
    if joint.ndim != 2 or joint.shape[1] % 2:
      raise UserError(f"{self.path(name, stream)}: expected [T, 2d] joint features, "
                      f"got shape {joint.shape}")
    half = joint.shape[1] // 2
    return joint[:, :half] if stream == "rgb" else joint[:, half:]


@dataclasses.dataclass(frozen=True)
class Video:
  """One video as the model sees it: features and video-level labels only."""
  name: str
  labels: tuple[int, ...]  # foreground class indices, 0-based over the class list
  num_segments: int
  duration: Optional[float]  # seconds, when the ground truth gives it
  source: FeatureSource = dataclasses.field(compare=False, repr=False)

  def load(self, streams: Sequence[str]) -> dict[str, np.ndarray]:
    return {s: np.asarray(self.source.load_stream(self.name, s), np.float32)
            for s in streams}


@dataclasses.dataclass
class Dataset:
  classes: tuple[str, ...]
  streams: tuple[str, ...]
  feature_dims: dict[str, int]
  train: list[Video]
  test: list[Video]
  test_gt: dict[str, groundtruth.GTVideo]  # evaluation only; includes skipped test videos
  gt_source: str  # file the ground truth came from
  class_source: str  # for messages: --class_list, else gt_source (its labels, or the
  # known_classes given to load_dataset when they include all of them, make the list)
  num_extra: int = 0  # the last num_extra training videos come from --extra_train
  skipped: list[str] = dataclasses.field(default_factory=list)
  # How wtal_tf.extract made the features a model learns from (the training videos', not
  # --extra_train's), or is tested on when those are not read (features_made); None: a
  # video has no status record, or the records disagree
  features_made: Optional[dict] = None
  timing: Optional[dict] = None  # DataConfig.segment_timing: what a segment is in time

  @property
  def num_classes(self) -> int:
    return len(self.classes)

  @property
  def scored(self) -> bool:
    """Whether the test videos have an annotated instance to score detections against."""
    return groundtruth.annotated(self.test_gt)


def check_features(source: FeatureSource, name: str, streams: Sequence[str],
                   dims: dict[str, int]) -> int:
  """Validates one video's features; returns T. Fills `dims` from the first video.

  Raises UserError naming the file: unreadable, not 2-D, not floating point,
  no segments, a dimension other than the other videos', NaN/inf values, or
  stream lengths that differ.
  """
  lengths = {}
  for stream in streams:
    where = source.path(name, stream)
    x = source.load_stream(name, stream)
    if not isinstance(x, np.ndarray) or x.ndim != 2:
      raise UserError(f"{where}: expected a 2-D [T, d] array, got shape "
                      f"{getattr(x, 'shape', type(x).__name__)}")
    if not np.issubdtype(x.dtype, np.floating):
      raise UserError(f"{where}: expected floating-point features, got dtype {x.dtype}")
    if x.shape[0] == 0:
      raise UserError(f"{where}: empty video (0 segments)")
    expected = dims.setdefault(stream, x.shape[1])
    if x.shape[1] != expected:
      raise UserError(f"{where}: feature dimension {x.shape[1]}, expected {expected} "
                      "(as in the other videos)")
    finite = np.isfinite(x) & (np.abs(x) <= FLOAT32_MAX)  # (read as float32: larger is inf)
    if not finite.all():
      bad = int(np.size(x) - finite.sum())
      raise UserError(f"{where}: {bad} NaN/inf values"
                      + (" (as float32, which they are read as)" if np.isfinite(x).all() else ""))
    lengths[stream] = x.shape[0]
  if len(set(lengths.values())) > 1:
    raise UserError(f"video {name!r}: stream lengths differ {lengths} "
                    f"({', '.join(source.path(name, s) for s in streams)})")
  return next(iter(lengths.values()))


def _build_videos(gt_videos, classes, source_of, streams, dims, skip_invalid, skipped,
                  require_labels, gt_source):
  """source_of(video) -> the FeatureSource holding its features; gt_source: the ground
  truth's file, named by a label error."""
  index = {c: k for k, c in enumerate(classes)}
  videos = []
  for v in gt_videos:
    source = source_of(v)

    def check():  # (labels not in the class list were refused for the whole ground truth)
      if require_labels and not v.labels:
        raise UserError(f"{gt_source}: video {v.name!r}: training video (subset "
                        f"{v.subset!r}) without any label")
      return check_features(source, v.name, streams, dims)

    t = _unless_skipped(check, skip_invalid, skipped)
    if t is not None:
      videos.append(Video(v.name, tuple(index[l] for l in v.labels), t, v.duration, source))
  return videos


def _unless_skipped(check, skip_invalid: bool, skipped: list[str]):
  """check(), or None when it raises a UserError and `skip_invalid` (its message appended
  to `skipped`); else that error, saying --skip_invalid_videos would leave the video out."""
  try:
    return check()
  except LayoutError:  # (every video's: not one to skip)
    raise
  except UserError as e:
    if not skip_invalid:
      raise UserError(f"{e} (--skip_invalid_videos leaves such videos out)") from None
    skipped.append(str(e))
    return None


def _wtalc_ground_truth(data_dir: str) -> tuple[dict, str, tuple[str, ...]]:
  """(ground truth, its source, W-TALC's class list) from the annotation .npy files."""
  ann = os.path.join(data_dir, WTALC_ANNOTATIONS)

  def load(name):
    return load_npy(os.path.join(ann, name + contract.FEATURE_EXT), "W-TALC annotation file",
                    allow_pickle=True)

  def text(x):
    return x.decode() if isinstance(x, bytes) else str(x)

  names = [text(x) for x in load("videoname")]
  subsets = [text(x) for x in load("subset")]
  segments, labels = load("segments"), load("labels")
  duration = load("duration").reshape(-1)
  classes = tuple(text(x) for x in load("classlist"))
  if not (len(names) == len(subsets) == len(segments) == len(labels) == len(duration)):
    raise UserError(f"{ann}: annotation arrays have different lengths")
  database = {}
  for k, name in enumerate(names):
    if len(segments[k]) != len(labels[k]):
      raise UserError(f"{ann}: video {name!r} has {len(segments[k])} segments "
                      f"but {len(labels[k])} labels")
    database[name] = {
        "subset": subsets[k], "duration": float(duration[k]),
        "annotations": [{"label": text(l), "segment": [float(s[0]), float(s[1])]}
                        for s, l in zip(segments[k], labels[k])]}
  return groundtruth.parse_database(database, ann), ann, classes


def ground_truth(cfg: DataConfig, known_classes: Optional[Sequence[str]] = None
                 ) -> tuple[dict[str, groundtruth.GTVideo], str, tuple[str, ...]]:
  """All ground-truth videos of the dataset (either layout), their source and the class list.

  The class list is --class_list if given, else W-TALC's classlist.npy (layout
  b), or `known_classes` when the ground-truth labels are all among them (layout a: a
  trained model's, for a test set without some of them), else the sorted labels.
  """
  if cfg.layout == "wtalc":
    gt, source, classes = _wtalc_ground_truth(cfg.data_dir)
    if cfg.class_list:
      classes = groundtruth.class_names(gt.values(), cfg.class_list)
    return gt, source, classes
  source = cfg.gt_file or contract.gt_path(cfg.data_dir)  # (per_video: DataConfig checks)
  if not os.path.exists(source) and os.path.exists(os.path.join(cfg.data_dir,
                                                                WTALC_ANNOTATIONS)):
    raise UserError(f"{source}: file not found; {cfg.data_dir} holds W-TALC's "
                    f"{WTALC_ANNOTATIONS}/: add --layout=wtalc")
  gt = groundtruth.load_activitynet(source)
  return gt, source, groundtruth.class_names(gt.values(), cfg.class_list, source,
                                             known_classes)


def load_extra(dirs: Sequence[str], classes: Sequence[str], streams: Sequence[str],
               dims: dict[str, int], skip_invalid: bool, skipped: list[str]) -> list[Video]:
  """Extra weakly-labelled videos: `DIR/labels.csv` (video,labels) + `DIR/<stream>/*.npy`.

  skip_invalid: a video whose features are invalid is left out, its reason appended to
  `skipped` (as _build_videos does), instead of being an error.
  """
  index = {c: k for k, c in enumerate(classes)}
  videos = []
  for d in dirs:
    path = os.path.join(d, EXTRA_LABELS)
    if not os.path.isfile(path):
      raise UserError(f"{path}: extra training labels not found")
    source = PerVideoSource(d)
    # (utf-8-sig: a byte-order mark, as Excel writes, is not part of the header)
    with reading(path), open(path, newline="", encoding="utf-8-sig") as f:
      reader = csv.DictReader(f)
      fields = reader.fieldnames
      rows = [(reader.line_num, row) for row in reader]
    if fields is None or not {"video", "labels"} <= set(fields):
      raise UserError(f"{path}: expected a header 'video,labels'")
    seen = set()
    for line, row in rows:
      name = (row["video"] or "").strip()
      names = [l.strip() for l in (row["labels"] or "").split(EXTRA_LABEL_SEP) if l.strip()]
      where = f"{path}: line {line} ({name!r})"
      if row.get(None):  # (csv's key for fields beyond the header's)
        raise UserError(f"{where}: {len(row[None])} more field(s) than the header "
                        f"'video,labels' (labels are separated by '{EXTRA_LABEL_SEP}')")
      if not name:
        raise UserError(f"{where}: empty video name")
      if name in seen:
        raise UserError(f"{where}: duplicate video")
      seen.add(name)
      if not names:
        raise UserError(f"{where}: no labels")
      unknown = [l for l in names if l not in index]
      if unknown:
        raise UserError(f"{where}: labels not in the class list: {unknown} (the dataset's "
                        "labels unless --class_list names more)")
      t = _unless_skipped(lambda: check_features(source, name, streams, dims), skip_invalid,
                          skipped)
      if t is not None:
        videos.append(Video(name, tuple(sorted({index[l] for l in names})), t, None, source))
    if not seen:
      raise UserError(f"{path}: no videos listed")
  return videos


def check_data_dir(cfg: DataConfig) -> None:
  """A UserError unless --data_dir is a local folder (what load_dataset reads first)."""
  if not cfg.data_dir:
    raise UserError(f"--data_dir is required: the dataset folder; {LAYOUT_HELP}")
  if not os.path.isdir(cfg.data_dir):
    if REMOTE.match(cfg.data_dir):  # e.g. what extract wrote to s3://
      raise UserError(f"{cfg.data_dir}: training and localization read a dataset on a local "
                      "disk: copy it to one first")
    raise UserError(f"{cfg.data_dir}: data directory not found; {LAYOUT_HELP}")


def load_dataset(cfg: DataConfig, include_train: bool = True,
                 known_classes: Optional[Sequence[str]] = None) -> Dataset:
  """Reads and validates everything a run will read, before training starts.

  With include_train=False (localization) the training videos are not read and
  the training subset need not exist (e.g. a dataset written by wtal_tf.extract).
  known_classes: the class list when no --class_list is given and the ground-truth
  labels are all among them (a trained model's, for localization).
  """
  check_data_dir(cfg)
  if not cfg.streams:  # (DataConfig checks each stream's name)
    raise UserError(f"--streams=: choose from {', '.join(contract.STREAMS)}")
  gt, gt_source, classes = ground_truth(cfg, known_classes)
  if cfg.layout == "wtalc":
    feat_path = os.path.join(cfg.data_dir, WTALC_FEATURES)
    features = load_npy(feat_path, "W-TALC joint feature file", allow_pickle=True)
    if len(features) != len(gt):
      raise UserError(f"{feat_path}: {len(features)} videos, but the annotations list "
                      f"{len(gt)}")
    wtalc = WtalcSource(feat_path, features, {name: k for k, name in enumerate(gt)})
    train_source = test_source = lambda v: wtalc
  else:
    sources = {}

    def source_of(v, default_split):  # an entry may name its split (wtal_tf.extract does)
      split = v.split or default_split
      if split not in sources:
        sources[split] = PerVideoSource(contract.split_dir(cfg.data_dir, split),
                                        os.path.join(cfg.data_dir, contract.STATUS_DIR, split))
      return sources[split]

    train_source = lambda v: source_of(v, cfg.train_split)  # noqa: E731
    test_source = lambda v: source_of(v, cfg.test_split)  # noqa: E731
  test_gt = groundtruth.select_subset(gt, cfg.test_subset, gt_source, "--test_subset")
  unknown = sorted({l for v in gt.values() for l in v.labels} - set(classes))
  if unknown:
    raise UserError(f"{gt_source}: labels not in the class list: {unknown}")
  dims, skipped = {}, []
  train = []
  if include_train:
    train_gt = groundtruth.select_subset(gt, cfg.train_subset, gt_source, "--train_subset")
    train = _build_videos(train_gt.values(), classes, train_source, cfg.streams, dims,
                          cfg.skip_invalid_videos, skipped, require_labels=True,
                          gt_source=gt_source)
    train_skipped = list(skipped)  # (the subset's, not --extra_train's)
    extra = load_extra(cfg.extra_train, classes, cfg.streams, dims,
                       cfg.skip_invalid_videos, skipped)
    train += extra
  test = _build_videos(test_gt.values(), classes, test_source, cfg.streams, dims,
                       cfg.skip_invalid_videos, skipped, require_labels=False,
                       gt_source=gt_source)
  if include_train and not train:
    why = (f": each of its {len(train_skipped)} was skipped (e.g. {train_skipped[0]})"
           if train_skipped else "")
    raise UserError(f"{gt_source}: no usable training videos in subset "
                    f"{cfg.train_subset!r}{why}")
  untrained = sorted({i.label for v in test_gt.values() for i in v.instances}
                     - {classes[c] for v in train for c in v.labels}) if include_train else []
  if untrained:  # (e.g. a typo in a test label): never a positive example, AP 0
    logging.warning("%s: labels of test videos that no training video has: %s (a class "
                    "the model never sees scores AP 0)", gt_source, untrained)
  own = train[:len(train) - len(extra)] if include_train else []  # (extra: no records)
  made = features_made(own + test, cfg.streams, own if include_train else test)
  for message in skipped:  # (every tool that loads the data says so, not only train)
    logging.warning("skipped: %s", message)
  _warn_of_durations(train + test, cfg, gt_source)
  _warn_of_late_instances(test, test_gt, cfg, gt_source)
  # test_gt keeps a skipped test video: it is scored as a video without detections.
  return Dataset(classes=tuple(classes), streams=tuple(cfg.streams), feature_dims=dims,
                 train=train, test=test, test_gt=dict(test_gt),
                 gt_source=gt_source, class_source=cfg.class_list or gt_source,
                 num_extra=len(extra) if include_train else 0, skipped=skipped,
                 features_made=made, timing=cfg.segment_timing())


def _warn_of_durations(videos: Sequence[Video], cfg: DataConfig, gt_source: str) -> None:
  """A warning naming the videos whose ground-truth duration and features disagree by more
  than DURATION_SLACK_SEGMENTS or _FRACTION: detections are clipped to the duration, so a
  wrong one (or a wrong --feature_fps) loses them."""
  sps = cfg.seconds_per_segment
  off = [v for v in videos if v.duration is not None
         and abs(v.num_segments * sps - v.duration) > _slack_s(v.duration, cfg)]
  if off:
    v = off[0]
    logging.warning(
        "%s: %d of %d videos have a duration that disagrees with their features (e.g. %r: "
        "%g s, but %d segments = %g s at --feature_fps=%g --segment_frames=%d): detections "
        "are clipped to the duration; check the durations or --feature_fps", gt_source,
        len(off), len(videos), v.name, v.duration, v.num_segments, v.num_segments * sps,
        cfg.feature_fps, cfg.segment_frames)


def _slack_s(length_s: float, cfg: DataConfig) -> float:
  """How far (seconds) a video's features and ground truth may disagree on its length."""
  return max(DURATION_SLACK_SEGMENTS * cfg.seconds_per_segment,
             DURATION_SLACK_FRACTION * length_s)


def _warn_of_late_instances(test: Sequence[Video], test_gt: dict, cfg: DataConfig,
                            gt_source: str) -> None:
  """A warning naming the test instances that end after their video (its duration, else
  its features' length) by more than the slack: e.g. segments given in frames, not
  seconds; no detection can match them."""
  late = []
  for v in test:
    length = v.duration if v.duration is not None else v.num_segments * cfg.seconds_per_segment
    late += [(v.name, i, length) for i in test_gt[v.name].instances
             if i.end > length + _slack_s(length, cfg)]
  if late:
    name, i, length = late[0]
    logging.warning("%s: %d annotated instances of %d test videos end after their video (e.g. "
                    "%r: %s [%g, %g] s, the video %g s): segments are in seconds; no "
                    "detection can match them", gt_source, len(late),
                    len({n for n, _, _ in late}), name, i.label, i.start, i.end, length)


def check_test_videos(dataset: Dataset, test_subset: str, scored: bool = False) -> Dataset:
  """`dataset`, or a UserError when none of its test videos is usable (each skipped as
  invalid), or (scored) none has an annotated instance: a run whose point is to score
  the test set would train for nothing."""
  if not dataset.test:
    raise UserError(f"{dataset.gt_source}: no usable test videos in subset {test_subset!r} "
                    "(each was skipped: the warnings above say why): nothing to evaluate")
  if scored:
    groundtruth.check_annotated(dataset.test_gt, test_subset, dataset.gt_source)
  return dataset


def features_made(videos: Sequence[Video], streams: Sequence[str],
                  learnt_from: Sequence[Video]) -> Optional[dict]:
  """How the features of `streams` of `learnt_from` (some of `videos`: the training
  videos, or the test videos when those are not read) were made (their status records'
  provenance, wtal_tf/features/provenance.py), when every one has a record and all say
  the same; else None. Records of `videos` that disagree (e.g. test videos extracted at
  another crop, or with other weights, than the training videos) are a warning naming
  what differs: a model takes such features as one kind of input and gives wrong
  scores. Each record is read once."""
  keys = {}  # video name -> its provenance (for streams) as a JSON key; None: no record
  for v in videos:
    made = v.source.made(v.name)
    keys[v.name] = None if made is None else json.dumps(made_lib.restricted(made, streams),
                                                        sort_keys=True)
  groups: dict[str, list[str]] = {}
  for name, key in keys.items():
    if key is not None:
      groups.setdefault(key, []).append(name)
  if len(groups) > 1:
    (a, names_a), (b, names_b) = sorted(groups.items(), key=lambda g: -len(g[1]))[:2]
    logging.warning("the features of these videos were made in %d ways by wtal_tf.extract: "
                    "%d videos (e.g. %s) and %d (e.g. %s) differ (%s); a model takes them "
                    "as one kind of input: extract them alike", len(groups), len(names_a),
                    names_a[0], len(names_b), names_b[0],
                    "; ".join(made_lib.differences(json.loads(a), json.loads(b)))
                    or "in what only one of them records")
  learnt = {keys[v.name] for v in learnt_from}
  return json.loads(learnt.pop()) if len(learnt) == 1 and None not in learnt else None


def multi_hot(labels: Sequence[int], num_classes: int) -> np.ndarray:
  y = np.zeros(num_classes, np.float32)
  y[list(labels)] = 1.0
  return y
