"""Ground truth in ActivityNet JSON, and the class list.

ActivityNet-style ground truth is `{"database": {video: {"subset": name,
"annotations": [{"label": name, "segment": [start, end]}], "duration": s}}}`;
segments may be numbers or strings and `duration` may be missing. THUMOS14's
'Ambiguous' instances are not ground truth and are dropped on reading.
"""

import collections
import dataclasses
import difflib
import json
import math
import os
import re
from typing import Iterable, Optional, Sequence

from absl import logging

from wtal_tf.errors import UserError, reading

AMBIGUOUS = "Ambiguous"
NEAR_SUBSET = 0.8  # difflib similarity from which another subset's name looks like a typo
_NUMBERS = re.compile(r"\d+")


@dataclasses.dataclass(frozen=True)
class Instance:
  label: str
  start: float  # seconds
  end: float  # seconds


@dataclasses.dataclass(frozen=True)
class GTVideo:
  name: str
  subset: str
  duration: Optional[float]  # seconds; None when the ground truth does not say
  instances: tuple[Instance, ...]
  # features/<split> holding the video's features, when the entry says (wtal_tf.extract
  # writes it); None: the split the run's flags give for its subset
  split: Optional[str] = None

  @property
  def labels(self) -> tuple[str, ...]:
    """The video-level labels: the sorted set of its instance labels."""
    return tuple(sorted({i.label for i in self.instances}))


def _number(value, what: str) -> float:
  try:
    x = float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{what} is not a number: {value!r}") from None
  if not math.isfinite(x):
    raise ValueError(f"{what} is not finite: {value!r}")
  return x


def parse_database(database: dict, source: str) -> dict[str, GTVideo]:
  """Validates an ActivityNet `database` dict and returns {video: GTVideo}."""
  if not isinstance(database, dict):
    raise UserError(f"{source}: 'database' must be an object of videos")
  videos = {}
  for name, entry in database.items():
    where = f"{source}: video {name!r}"
    if not isinstance(entry, dict):
      raise UserError(f"{where}: entry must be an object")
    subset = entry.get("subset")
    if not isinstance(subset, str):
      raise UserError(f"{where}: missing or non-string 'subset'")
    annotations = entry.get("annotations", [])
    if not isinstance(annotations, list):
      raise UserError(f"{where}: 'annotations' must be a list")
    duration, split = entry.get("duration"), entry.get("split")
    if split is not None and not isinstance(split, str):
      raise UserError(f"{where}: 'split' must be a string")
    try:
      if duration is not None:
        duration = _number(duration, "'duration'")
        if duration <= 0:
          raise ValueError(f"'duration' must be positive, got {duration}")
      instances = []
      for k, a in enumerate(annotations):
        if not isinstance(a, dict) or "label" not in a or "segment" not in a:
          raise ValueError(f"annotation {k} needs 'label' and 'segment'")
        label, seg = a["label"], a["segment"]
        if not isinstance(label, str) or not label:
          raise ValueError(f"annotation {k} has a bad label {label!r}")
        if label != label.strip():  # ("Jump " would be a class of its own)
          raise ValueError(f"annotation {k}: label {label!r} has spaces at its ends")
        if not isinstance(seg, (list, tuple)) or len(seg) != 2:
          raise ValueError(f"annotation {k} segment must be [start, end], got {seg!r}")
        start, end = (_number(v, f"annotation {k} segment") for v in seg)
        if start < 0 or end < start:
          raise ValueError(f"annotation {k} ({label}) has a negative or reversed "
                           f"segment [{start}, {end}]")
        if label != AMBIGUOUS:
          instances.append(Instance(label, start, end))
    except ValueError as e:
      raise UserError(f"{where}: {e}") from None
    videos[name] = GTVideo(name, subset, duration, tuple(instances), split)
  return videos


class _DuplicateKey(ValueError):
  pass


def _no_duplicates(pairs):
  obj = {}
  for key, value in pairs:
    if key in obj:
      raise _DuplicateKey(key)
    obj[key] = value
  return obj


def load_json(path: str) -> dict:
  """Reads a JSON object, with one clear error for a missing or malformed file.

  Duplicate keys (e.g. a video listed twice) are an error, not silently merged.
  """
  if not os.path.isfile(path):
    problem = "a folder, not a JSON file" if os.path.isdir(path) else "file not found"
    raise UserError(f"{path}: {problem}")
  try:
    with open(path, encoding="utf-8") as f:
      obj = json.load(f, object_pairs_hook=_no_duplicates)
  except _DuplicateKey as e:
    raise UserError(f"{path}: duplicate key {e.args[0]!r} (a video listed twice?)") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise UserError(f"{path}: not valid JSON ({e})") from None
  except OSError as e:
    raise UserError(f"{path}: cannot read ({e.strerror})") from None
  if not isinstance(obj, dict):
    raise UserError(f"{path}: expected a JSON object at the top level")
  return obj


def load_activitynet(path: str) -> dict[str, GTVideo]:
  """Loads ActivityNet-style ground truth from `path`."""
  obj = load_json(path)
  if "database" not in obj:
    raise UserError(f"{path}: no 'database' key (not ActivityNet-style ground truth)")
  return parse_database(obj["database"], path)


def annotated(videos: dict[str, GTVideo]) -> bool:
  """Whether any of `videos` has an instance: something to score detections against."""
  return any(v.instances for v in videos.values())


def check_annotated(videos: dict[str, GTVideo], subset: str, source: str) -> None:
  """A UserError naming `source` when no video of `subset` (`videos`) has an instance."""
  if not annotated(videos):
    raise UserError(f"{source}: no annotated instance in subset {subset!r} (its "
                    f"{len(videos)} videos have none): nothing to score against")


def select_subset(videos: dict[str, GTVideo], subset: str, source: str,
                  flag: str = "") -> dict[str, GTVideo]:
  """The videos of one subset; an error naming the subsets present if none (and `flag`,
  the flag that chose `subset`, e.g. "--train_subset")."""
  chosen = {k: v for k, v in videos.items() if v.subset == subset}
  if not chosen:
    present = sorted({v.subset for v in videos.values()})
    choose = f": choose one with {flag}" if flag and present else ""
    raise UserError(f"{source}: no videos in subset {subset!r} (subsets present: "
                    f"{present}){choose}")
  others = collections.Counter(v.subset for v in videos.values() if v.subset != subset)
  for near in difflib.get_close_matches(subset, others, n=max(len(others), 1),
                                       cutoff=NEAR_SUBSET):
    if _NUMBERS.sub("", near) == _NUMBERS.sub("", subset):
      continue  # numbered splits (split1, split2; fold1, fold2): not a typo
    logging.warning("%s: %d videos have subset %r, not %r: they are left out", source,
                    others[near], near, subset)
  return chosen


def class_names(videos: Iterable[GTVideo], class_list: str = "", source: str = "",
                known: Optional[Sequence[str]] = None) -> tuple[str, ...]:
  """The class list: from `class_list` (one name a line), else the `known` classes (e.g.
  a trained model's) when the gt labels are all among them (a test set without some
  classes), else the sorted gt labels.

  Any ground-truth label missing from an explicit class list is an error.
  """
  present = sorted({i.label for v in videos for i in v.instances})
  if not class_list:
    if not present and known is None:
      raise UserError(f"{source or 'the ground truth'}: no labelled instances to take the "
                      "class list from: pass --class_list=FILE (one class name a line)")
    return tuple(known) if known is not None and set(present) <= set(known) else tuple(
        present)
  if not os.path.isfile(class_list):
    raise UserError(f"{class_list}: class list file not found")
  with reading(class_list), open(class_list, encoding="utf-8-sig") as f:  # (a byte-order mark
    # as Windows editors write is not part of the first name)
    names = [line.strip() for line in f if line.strip() and not line.startswith("#")]
  if len(set(names)) != len(names):
    raise UserError(f"{class_list}: duplicate class names")
  unknown = sorted(set(present) - set(names))
  if unknown:
    raise UserError(f"{class_list}: ground-truth labels not in the class list: {unknown}")
  return tuple(names)


def to_activitynet(videos: Iterable[GTVideo], version: str = "") -> dict:
  """Serialises GTVideos back to an ActivityNet-style dict."""
  database = {}
  for v in videos:
    entry = {"subset": v.subset,
             "annotations": [{"label": i.label, "segment": [i.start, i.end]}
                             for i in v.instances]}
    if v.duration is not None:
      entry["duration"] = v.duration
    if v.split is not None:
      entry["split"] = v.split
    database[v.name] = entry
  return {"version": version, "database": database}
