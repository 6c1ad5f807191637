"""Feature extraction of a directory of videos as an Apache Beam pipeline (one element per video).

Writes, under OUT (ExtractConfig.output_dir):
  features/<split>/<stream>/<video stem>.npy   float32 [T, 1024], written atomically
  gt.json                                      the videos' durations (and annotations, if
                                               given), merged with the entries already there
  extract_status/<split>/<video stem>.json     per-video record: frames, seconds, outcome
  failures_<split>.json                        the unusable videos and why (only if any)

A video whose outputs exist and validate (float32 [T, 1024] for every stream,
T = floor(frames / 16) with the frame count of its status record) is skipped
on a rerun. An unusable video (unreadable, corrupt, no frames, too short) is
recorded as a failure; the others go on. OUT must be a filesystem every Beam
worker can write (local disk for the DirectRunner; a shared mount otherwise).

The DirectRunner runs in multi_processing mode with one worker per core
unless the Beam arguments say otherwise; any other Beam option (--runner,
--flink_master, --project, ...) is passed through unchanged.
"""

import json
import logging
import os
import threading
import time
from typing import Iterable, Sequence
import uuid

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions

from wtal_tf import io_utils
from wtal_tf.config import ExtractConfig
from wtal_tf.data import contract
from wtal_tf.data import groundtruth
from wtal_tf.data import npy
from wtal_tf.errors import UserError
from wtal_tf.features import extraction
from wtal_tf.features import video
from wtal_tf.features.beam_options import BEAM_LOG_LEVEL, pipeline_options

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv",
                    ".wmv", ".3gp", ".ogv")
STATUS_DIR = "extract_status"
PROGRESS_EVERY_S = 10.0  # seconds between progress lines
OK, SKIPPED, FAILED = "ok", "skipped", "failed"


def list_videos(video_dir: str) -> list[str]:
  """The video files directly in `video_dir` (by extension), sorted; UserError if none."""
  if not video_dir or not os.path.isdir(video_dir):
    raise UserError(f"{video_dir or '--video_dir'}: video directory not found")
  paths = sorted(os.path.join(video_dir, f) for f in os.listdir(video_dir)
                 if f.lower().endswith(VIDEO_EXTENSIONS) and not f.startswith("."))
  if not paths:
    raise UserError(f"{video_dir}: no video files ({', '.join(VIDEO_EXTENSIONS)})")
  stems = {}
  for p in paths:
    other = stems.setdefault(video.name(p), p)
    if other != p:
      raise UserError(f"{video_dir}: {os.path.basename(other)} and {os.path.basename(p)} "
                      "would write the same feature file")
  return paths


def status_path(out: str, split: str, name: str) -> str:
  return os.path.join(out, STATUS_DIR, split, name + ".json")


def failures_path(out: str, split: str) -> str:
  return os.path.join(out, f"failures_{split}.json")


def _read_json(path: str):
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def completed(cfg: ExtractConfig, name: str) -> dict | None:
  """The status record of a video whose outputs exist and validate, else None."""
  record = _read_json(status_path(cfg.output_dir, cfg.split, name))
  if not isinstance(record, dict) or record.get("status") not in (OK, SKIPPED):
    return None
  expected = (extraction.num_segments(int(record.get("frames", 0))), contract.FEATURE_DIM)
  for s in cfg.streams:
    try:
      x = npy.read(contract.feature_path(cfg.output_dir, cfg.split, s, name))
    except (OSError, ValueError):
      return None
    if x.dtype != np.float32 or x.shape != expected:
      return None
  return record


class ExtractVideoFn(beam.DoFn):
  """Video path -> its feature files and status record; yields the record.

  Every record written carries `run_id`, so the submitting process tells this
  run's records from those an earlier run left behind.
  """

  def __init__(self, cfg: ExtractConfig, run_id: str = ""):
    super().__init__()
    self.cfg, self.run_id = cfg, run_id
    self.extractor = self.setup_error = None

  def setup(self):
    try:
      self.extractor = extraction.Extractor(self.cfg)
    except UserError as e:  # e.g. a corrupt checkpoint: every video fails with this reason
      self.setup_error = e

  def process(self, path: str) -> Iterable[dict]:
    cfg, name = self.cfg, video.name(path)
    record = completed(cfg, name)
    if record is not None:
      record = {**record, "video": path, "status": SKIPPED, "run": self.run_id}
      io_utils.write_json(status_path(cfg.output_dir, cfg.split, name), record)
      yield record
      return
    try:
      if self.setup_error is not None:
        raise UserError(f"{path}: not extracted: {self.setup_error}")
      result = self.extractor(path)
    except UserError as e:
      record = {"video": path, "status": FAILED, "reason": str(e), "run": self.run_id}
    else:
      for s, x in result.features.items():
        with io_utils.atomic_path(contract.feature_path(cfg.output_dir, cfg.split, s, name)) as tmp:
          np.save(tmp, x)
      record = {"video": path, "status": OK, "frames": result.num_frames,
                "segments": len(next(iter(result.features.values()))),
                "duration": result.duration, "seconds": result.seconds, "run": self.run_id}
    io_utils.write_json(status_path(cfg.output_dir, cfg.split, name), record)
    yield record


class _Progress(threading.Thread):
  """Logs videos done/total and frames per second from the status records of this run."""

  def __init__(self, cfg: ExtractConfig, names: Sequence[str]):
    super().__init__(daemon=True)
    self.cfg, self.names, self.start_time = cfg, names, time.time()
    self.stopped = threading.Event()

  def report(self) -> None:
    done, frames = 0, 0
    for name in self.names:
      path = status_path(self.cfg.output_dir, self.cfg.split, name)
      try:
        if os.path.getmtime(path) < self.start_time:
          continue
      except OSError:
        continue
      record = _read_json(path) or {}
      done += 1
      if record.get("status") == OK:
        frames += record.get("frames", 0)
    elapsed = time.time() - self.start_time
    logging.info("extract %s: %d/%d videos done, %.1f frames/s", self.cfg.split, done,
                 len(self.names), frames / max(elapsed, 1e-9))

  def run(self):
    while not self.stopped.wait(PROGRESS_EVERY_S):
      self.report()


def run_pipeline(cfg: ExtractConfig, paths: Sequence[str], options: PipelineOptions,
                 run_id: str = "") -> None:
  """Runs the Beam pipeline over `paths` (outputs and status records written by the workers)."""
  with beam.Pipeline(options=options) as p:
    _ = (p | "videos" >> beam.Create(list(paths))
         | "spread" >> beam.Reshuffle()
         | "extract" >> beam.ParDo(ExtractVideoFn(cfg, run_id)))


def _gt_entries(cfg: ExtractConfig, records: dict[str, dict], given: dict) -> dict:
  """gt.json entries of the usable videos: duration, and subset/annotations from `given`."""
  entries = {}
  for name, record in records.items():
    if record.get("status") == FAILED:
      continue
    gt = given.get(name)
    entries[name] = {
        "subset": gt.subset if gt else cfg.split,
        "duration": record["duration"],
        "annotations": [] if gt is None else [
            {"label": i.label, "segment": [i.start, i.end]} for i in gt.instances]}
  return entries


def write_dataset_files(cfg: ExtractConfig, records: dict[str, dict],
                        annotations: dict) -> list[dict]:
  """Merges the videos into OUT/gt.json, writes or removes the failures list; returns failures.

  annotations: {video: GTVideo} of --annotations ({} without it).
  """
  gt_path = contract.gt_path(cfg.output_dir)
  database = {}
  if os.path.exists(gt_path):
    database = groundtruth.load_json(gt_path).get("database", {})
  database.update(_gt_entries(cfg, records, annotations))
  io_utils.write_json(gt_path, {"version": "wtal_tf.extract", "database": database}, indent=1)
  failures = [{"video": r["video"], "reason": r["reason"]} for r in records.values()
              if r.get("status") == FAILED]
  path = failures_path(cfg.output_dir, cfg.split)
  if failures:
    io_utils.write_json(path, failures, indent=1)
  elif os.path.exists(path):
    os.remove(path)
  return failures


def extract(cfg: ExtractConfig) -> dict[str, dict]:
  """Extracts every video of cfg.video_dir; returns {video stem: status record}.

  Raises UserError (after writing everything else) if some videos failed.
  """
  options = pipeline_options(cfg.pipeline_args)
  paths = list_videos(cfg.video_dir)
  # Read before any work, so a bad file fails first.
  annotations = groundtruth.load_activitynet(cfg.annotations) if cfg.annotations else {}
  extraction.check_weights(cfg, cfg.streams)
  io_utils.ensure_writable_dir(cfg.output_dir, "output dir")
  names = [video.name(p) for p in paths]
  logging.info("extract %s: %d videos, streams %s -> %s", cfg.split, len(paths),
               ",".join(cfg.streams), cfg.output_dir)
  logging.getLogger("apache_beam").setLevel(BEAM_LOG_LEVEL)
  progress = _Progress(cfg, names)
  progress.start()
  run_id = uuid.uuid4().hex
  try:
    run_pipeline(cfg, paths, options, run_id)
  finally:
    progress.stopped.set()
  progress.report()
  records = {}
  for name, path in zip(names, paths):
    record = _read_json(status_path(cfg.output_dir, cfg.split, name))
    if not isinstance(record, dict) or record.get("run") != run_id:
      record = {"video": path, "status": FAILED,
                "reason": f"{path}: no status record from this run (worker lost?)"}
    records[name] = record
  failures = write_dataset_files(cfg, records, annotations)
  for f in failures:
    logging.error("%s", f["reason"])
  counts = {k: sum(r["status"] == k for r in records.values()) for k in (OK, SKIPPED, FAILED)}
  logging.info("extract %s: %d extracted, %d already done, %d failed -> %s", cfg.split,
               counts[OK], counts[SKIPPED], counts[FAILED], cfg.output_dir)
  if failures:
    raise UserError(f"{len(failures)} of {len(paths)} videos failed; list in "
                    f"{failures_path(cfg.output_dir, cfg.split)}")
  return records
