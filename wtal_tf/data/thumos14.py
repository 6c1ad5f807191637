"""THUMOS14's official annotation files (per-class txt) as ground truth."""

import itertools
import math
import os
from typing import Mapping, Optional

from absl import logging

from wtal_tf import io_utils
from wtal_tf.data import groundtruth
from wtal_tf.errors import UserError, reading

VERSION = "THUMOS14 official temporal annotations (Ambiguous removed)"
# Test videos dropped by the 210-video convention (BaS-Net, UM, CoLA, ...).
WTAL_STANDARD_DROPS = ("video_test_0000270", "video_test_0001496")
SUFFIX = {"validation": "_val.txt", "test": "_test.txt"}


def _annotation_files(directory: str, subset: str) -> list[str]:
  """The names of the <Class><SUFFIX> files in `directory`, sorted ([]: none or unlisted)."""
  return sorted(fn for fn in io_utils.entries(directory) if fn.endswith(SUFFIX[subset]))


def _read_split(directory: str, subset: str) -> tuple[set[str], list[tuple]]:
  """(the classes of the folder's annotation files, its (video, label, start, end) rows,
  Ambiguous ones too)."""
  if not os.path.isdir(directory):
    problem = "a file, not" if os.path.exists(directory) else "not found:"
    raise UserError(f"{directory}: {problem} the folder of <Class>{SUFFIX[subset]} "
                    "annotation files")
  suffix = SUFFIX[subset]
  rows = []
  files = _annotation_files(directory, subset)
  if not files:
    raise UserError(f"{directory}: no *{suffix} annotation files")
  for fn in files:
    label = fn[:-len(suffix)]
    path = os.path.join(directory, fn)
    # (a byte-order mark is not a video's name)
    with reading(path), open(path, encoding="utf-8-sig") as f:
      for n, line in enumerate(f, 1):
        parts = line.split()
        if not parts:
          continue
        if len(parts) != 3:
          raise UserError(f"{path}: line {n}: expected 'video start end', got {line.strip()!r}")
        try:
          start, end = float(parts[1]), float(parts[2])
        except ValueError:
          raise UserError(f"{path}: line {n}: start/end are not numbers") from None
        if not (math.isfinite(start) and math.isfinite(end)) or not 0 <= start <= end:
          raise UserError(f"{path}: line {n}: start {parts[1]} and end {parts[2]} are not a "
                          "segment (0 <= start <= end, in seconds)")
        rows.append((parts[0], label, start, end))
  return {fn[:-len(suffix)] for fn in files}, rows


def read_official(split_dirs: Mapping[str, str], video_info: Optional[str] = None,
                  wtal_standard: bool = False) -> dict[str, groundtruth.GTVideo]:
  """{video: GTVideo} from the per-class txt files of each subset.

  Instances are sorted per video by (start, end, label). `video_info` is an
  optional JSON {video: {"duration": s, ...}} giving durations.
  """
  info = groundtruth.load_json(video_info) if video_info else {}
  grouped: dict[str, tuple[str, list]] = {}
  read = {subset: _read_split(directory, subset) for subset, directory in split_dirs.items()}
  _check_same_classes(split_dirs, {subset: classes for subset, (classes, _) in read.items()})
  ambiguous = set()
  for subset, (_, rows) in read.items():
    for video, label, start, end in rows:
      if wtal_standard and video in WTAL_STANDARD_DROPS:
        continue
      if label == groundtruth.AMBIGUOUS:  # not ground truth
        ambiguous.add(video)
        continue
      grouped.setdefault(video, (subset, []))[1].append((start, end, label))
  only_ambiguous = sorted(ambiguous - set(grouped))
  if only_ambiguous:  # (THUMOS14's test set has one: 212 videos, not 213)
    logging.info("%d videos whose only instances are Ambiguous are left out (e.g. %s)",
                 len(only_ambiguous), only_ambiguous[0])
  if video_info and not set(info) & set(grouped):
    raise UserError(f"{video_info}: none of its keys is an annotated video (expected "
                    f"{{video: {{\"duration\": seconds}}}}, e.g. {next(iter(grouped), '')!r})")
  videos = {}
  for video in sorted(grouped):
    subset, rows = grouped[video]
    videos[video] = groundtruth.GTVideo(
        video, subset, _duration(info.get(video), video_info, video),
        tuple(groundtruth.Instance(l, s, e) for s, e, l in sorted(rows)))
  return videos


def convert(split_dirs: Mapping[str, str], output: str, video_info: Optional[str] = None,
            wtal_standard: bool = False) -> tuple[str, Optional[str]]:
  """Writes read_official's ground truth as ActivityNet JSON at `output` (checked before
  reading); returns (a summary line, a warning when `video_info` gives no duration for
  some videos, else None)."""
  io_utils.check_writable(output, "ground-truth file", taken=_inputs(split_dirs, video_info))
  videos = read_official(split_dirs, video_info, wtal_standard)
  io_utils.write_json(output, groundtruth.to_activitynet(videos.values(), VERSION), indent=1)
  summary = (f"{output}: {len(videos)} videos, "
             f"{sum(len(v.instances) for v in videos.values())} instances")
  undated = sorted(k for k, v in videos.items() if v.duration is None)
  if not (video_info and undated):  # (a file for other videos matches none and is refused)
    return summary, None
  return summary, (f"{video_info}: no duration for {len(undated)} of {len(videos)} videos "
                   f"(e.g. {undated[0]}): their detections are not clipped to the video's end")


def _inputs(split_dirs: Mapping[str, str], video_info: Optional[str]) -> dict[str, str]:
  """{path: what it is} of the files convert reads (its output must be none of them)."""
  inputs = {video_info: "durations file of --video_info"} if video_info else {}
  for subset, directory in split_dirs.items():  # (read_official says why one is absent)
    for fn in _annotation_files(directory, subset):
      inputs[os.path.join(directory, fn)] = f"{subset} annotation file {fn}"
  return inputs


def _check_same_classes(split_dirs: Mapping[str, str], files: Mapping[str, set[str]]) -> None:
  """A UserError naming a class file one subset's folder has and another's lacks (a file
  lost in copying would silently drop that class's instances). files: {subset: the
  classes of its folder's files}."""
  for subset, other in itertools.permutations(files, 2):
    missing = sorted(files[other] - files[subset])
    if missing:
      raise UserError(f"{split_dirs[subset]}: no {missing[0]}{SUFFIX[subset]}, which "
                      f"{split_dirs[other]} has as {missing[0]}{SUFFIX[other]}"
                      + (f" ({len(missing) - 1} more classes missing)" if len(missing) > 1
                         else ""))


def _duration(entry, source: str, video: str) -> Optional[float]:
  """A video's duration in seconds from its video_info entry (None: not given)."""
  duration = entry.get("duration") if isinstance(entry, dict) else None
  if duration is None:
    return None
  try:
    seconds = float(duration)
  except (TypeError, ValueError):
    seconds = math.nan
  if not math.isfinite(seconds) or seconds <= 0:
    raise UserError(f"{source}: {video}: duration {duration!r} is not a positive number of "
                    "seconds")
  return seconds
