"""The steps of the extraction pipeline (Beam DoFns) and the files they write under OUT.

features.beam_pipeline plans the work items and runs these steps: ExtractChunkFn
extracts one chunk of a video, AssembleVideoFn joins a video's chunks into its
feature files and status record, FinishRunFn writes gt.json, the failures list
and the run's summary.

This module does not import TensorFlow. Beam's Dask runner sends the pipeline's
steps to the Dask scheduler, which unpickles them (importing this module) to
plan the tasks, and never runs them; the workers import TensorFlow when they
build their Extractor (_extractor, extraction_module). A new cluster's first run
thereby waits only for the scheduler's import of Beam and of this module, not of
TensorFlow.

Writes, under OUT (ExtractConfig.output_dir; any Beam filesystem, through
features.storage, each file complete or absent):
  features/<split>/<stream>/<video>.npy       float32 [T, 1024]
  gt.json                                     durations, the split of each video and the
                                              annotations if given: made from the status
                                              records, with other entries already there kept
  extract_status/<split>/<video>.json         per video: frames, segments, outcome, the
                                              provenance of its features (features.provenance)
                                              and its gt.json entry
  extract_chunks/<split>/<video>/<k>.npz      a finished chunk of an unfinished video (for a
                                              restart; removed once the video is assembled)
  failures_<split>.json                       the unusable videos and why (only if any)
  extract_runs/<run id>.json                  the records of one run (read and removed by
                                              its driver; one nobody read, by a later run
                                              once it is ABANDONED_PROGRESS_S old)
  extract_progress/<run id>/                  a mark per finished chunk, for the driver's
                                              progress line (removed at the run's end, or
                                              by a later run once it is
                                              beam_pipeline.ABANDONED_PROGRESS_S old), and
                                              STOPPED_MARK if its driver was interrupted
"""

import hashlib
import io
import json
import logging
import os
import socket
import threading
import zipfile
from typing import Iterable, Optional, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
import numpy as np

from wtal_tf import config
from wtal_tf.config import ExtractConfig
from wtal_tf import contract
from wtal_tf import io_utils
from wtal_tf.data import npy
from wtal_tf.errors import UserError
from wtal_tf.features import provenance
from wtal_tf.features import storage
from wtal_tf.features import video

STATUS_DIR = contract.STATUS_DIR
CHUNKS_DIR, RUNS_DIR, PROGRESS_DIR = "extract_chunks", "extract_runs", "extract_progress"
MARK_EXT = ".done"  # progress mark of a finished chunk: <key>.<chunk>.<segments>.done (key:
# mark_key of the video's name), holding the worker's name (not empty: Beam's S3 upload
# cannot store an empty object)
STOPPED_MARK = "stopped"  # in a run's progress folder: its driver was interrupted, so its
# chunks not yet begun are not extracted (a cluster's workers go on after the driver ends)
OK, SKIPPED, FAILED = "ok", "skipped", "failed"
MARK_KEY_CHARS = 16  # hex digits of mark_key: 64 bits, no two videos of a run alike
WRITING = "writing"  # the status of a video's first record, written before its features:
# features are never without a record (not_made_here)
GT_VERSION = "wtal_tf.extract"
STATUS_EXT = ".json"  # of a status record: <video>.json, the longest name made from a video's
SUMMARY_EXT = ".json"  # of a run's summary: <run id>.json
GT_KEY = "gt"  # a status record's gt.json entry (None: failed, no entry)
LABELS_KEY = "labels"  # a failed video's record: the subset and annotations its entry
# had or was given, for the run that extracts it again
VIDEO_FAULT = "video_fault"  # a chunk result's: its error is the video's content's (corrupt,
# too short), not the file out of reach (video.Unreachable), OUT refusing a write or the
# weights failing to load, which leave its features in OUT as they were
MERGE_ROUNDS = 20  # most gt.json merges one run makes while others keep writing records


def mark_key(name: str) -> str:
  """A video's name in its chunks' progress marks: a hash, so that a mark's name stays
  short (a video's name may take most of the bytes a file name may have)."""
  return hashlib.sha1(io_utils.name_bytes(name)).hexdigest()[:MARK_KEY_CHARS]


class RunStopped(Exception):
  """Raised by a run's step after its driver was interrupted: the run's tasks fail fast."""


def summary_path(out: str, run_id: str) -> str:
  """OUT/extract_runs/<run id>.json: the records of one run (run_id "*": a pattern of all)."""
  return storage.join(out, RUNS_DIR, run_id + SUMMARY_EXT)


def stop_mark_path(out: str, run_id: str) -> str:
  return storage.join(out, PROGRESS_DIR, run_id, STOPPED_MARK)


def status_path(out: str, split: str, name: str) -> str:
  return storage.join(out, STATUS_DIR, split, name + STATUS_EXT)


def status_records(out: str) -> str:
  """The pattern of every status record of OUT, in every split."""
  return storage.join(out, STATUS_DIR, "*", "*" + STATUS_EXT)


def read_record(path: str):
  """A status record read to build gt.json: one that exists but cannot be read is a
  UserError (taken for absent, its video's entry would be left out)."""
  return storage.read_json(path, strict=True)


def failures_path(out: str, split: str) -> str:
  return storage.join(out, f"failures_{split}.json")


def chunk_path(out: str, split: str, name: str, index: int) -> str:
  return storage.join(out, CHUNKS_DIR, split, name, f"{index}.npz")


def _chunk_meta(task: dict) -> dict:
  return {k: task[k] for k in ("index", "start", "count", "made")}


def _save_chunk(path: str, task: dict, result: dict) -> None:
  buffer = io.BytesIO()
  meta = {**_chunk_meta(task), **{k: v for k, v in result.items() if k != "features"}}
  np.savez(buffer, meta=np.asarray(json.dumps(meta)), **result["features"])
  storage.write_bytes(path, buffer.getvalue())


def _load_chunk(path: str, task: dict) -> Optional[dict]:
  """A finished chunk saved by an earlier run with the same work item, else None."""
  data = storage.read_bytes(path)
  if data is None:
    return None
  try:  # (npy.read_npz: np.load's header parser is not safe in threads, npy's docstring)
    z = npy.read_npz(data)
    meta = json.loads(str(z["meta"]))
    features = {s: z[s] for s in task["made"]["settings"]["streams"]}
  except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile):
    return None
  if {k: meta.get(k) for k in _chunk_meta(task)} != _chunk_meta(task):
    return None
  return {**{k: meta[k] for k in ("frames", "total_frames", "segments", "worker", "warning")},
          "features": features}


_EXTRACTORS: dict = {}  # (encoding, weights ids) -> the Extractor of each worker process,
# shared by its threads and kept beyond one DoFn instance (Dask makes one per partition)
_EXTRACTORS_LOCK = threading.Lock()  # threads asking at once wait for the one being built


def extraction_module():
  """features.extraction, imported (with TensorFlow) on first call.

  The one import of TensorFlow on this module's path is here, in the process that
  extracts: Beam's Dask runner has the scheduler unpickle these steps, which imports
  this module, and a scheduler that imported TensorFlow would make each new
  cluster's first run wait seconds for it (see the module's docstring).
  """
  from wtal_tf.features import extraction  # pylint: disable=import-outside-toplevel
  return extraction


def _extractor(cfg: ExtractConfig, weight_ids: dict[str, str]):
  """The worker's features.extraction.Extractor for cfg's encoding (its streams and
  config.ENCODING_FIELDS, all an Extractor reads), built once per process (its threads
  share it, as do runs into other folders) and again when the run's weights differ:
  `weight_ids`: the provenance.weights_identity of each stream, taken by the driver as it
  planned the run (a work item's settings). A warm Dask worker thereby no longer reuses
  the weights a file held in an earlier run, and drops the Extractor of those."""
  encoding = ExtractConfig(streams=cfg.streams,
                           **{f: getattr(cfg, f) for f in config.ENCODING_FIELDS})
  key = (encoding, tuple(sorted(weight_ids.items())))
  with _EXTRACTORS_LOCK:
    if key not in _EXTRACTORS:
      for stale in [k for k in _EXTRACTORS if k[0] == encoding]:
        del _EXTRACTORS[stale]
      _EXTRACTORS[key] = extraction_module().Extractor(encoding)
    return _EXTRACTORS[key]


def forget_extractors() -> None:
  """Drops this process's Extractors: run by a driver whose workers were its threads, once
  the run ends, so that its models do not stay in memory after extract returns (weights
  changed before a later run are caught by _extractor's key either way)."""
  with _EXTRACTORS_LOCK:
    _EXTRACTORS.clear()


def _worker() -> str:
  return f"{socket.gethostname()}:{os.getpid()}"


class _WritesOutFn(beam.DoFn):
  """A step that reads and writes OUT: its filesystems get the run's Beam options in each
  worker (the DirectRunner's workers are given them by Beam, a Dask worker is not)."""

  def setup(self):
    storage.configure(PipelineOptions(self.cfg.pipeline_args))


class ExtractChunkFn(_WritesOutFn):
  """Work item -> (video name, chunk result); the result holds the chunk's features, or
  the reason the video is unusable. The chunk is extracted with the weights its work item
  names (task["made"]["settings"], which its status record keeps as its provenance)."""

  def __init__(self, cfg: ExtractConfig, run_id: str):
    super().__init__()
    self.cfg, self.run_id = cfg, run_id

  def _extractor_for(self, task: dict):
    try:
      return _extractor(self.cfg, task["made"]["settings"]["streams"])
    except UserError as e:  # e.g. a corrupt checkpoint: every video fails with this reason
      raise UserError(f"{task['video']}: not extracted: {e}") from None

  def process(self, task: dict) -> Iterable[tuple[str, dict]]:
    cfg, name, path = self.cfg, task["name"], task["video"]
    if storage.exists(stop_mark_path(cfg.output_dir, self.run_id)):
      raise RunStopped(f"{path}: chunk {task['index']} not extracted: the run's driver was "
                       "interrupted")
    cache = chunk_path(cfg.output_dir, cfg.split, name, task["index"])
    cached = task["count"] is not None or task["index"]  # a video of several chunks
    result = _load_chunk(cache, task) if cached else None
    try:  # an unusable video, unusable weights, or OUT refusing a write: the video fails
      if result is None:
        extractor = self._extractor_for(task)
        try:
          got = extractor(path, task["start"], task["count"])
        except video.Unreachable as e:  # (e.g. a worker without the video's disk)
          result = {"error": str(e), "segments": 0}
        except UserError as e:
          result = {"error": str(e), "segments": 0, VIDEO_FAULT: True}
        else:
          result = {"features": got.features, "frames": got.num_frames,
                    "total_frames": got.total_frames,
                    "segments": len(got.features[cfg.streams[0]]),
                    "worker": _worker(), "warning": got.warning}
          if cached:
            _save_chunk(cache, task, result)
    except UserError as e:
      result = {"error": str(e), "segments": 0}
    mark = storage.join(cfg.output_dir, PROGRESS_DIR, self.run_id,
                        f"{mark_key(name)}.{task['index']}.{result['segments']}{MARK_EXT}")
    try:
      storage.write_bytes(mark, f"{_worker()}\n".encode())
    except UserError as e:
      result = {"error": str(e), "segments": 0}
    yield name, {**result, "index": task["index"], "video": path, "made": task["made"]}


class AssembleVideoFn(_WritesOutFn):
  """(video name, its chunk results) -> the video's feature files and status record (with
  its gt.json entry, from `annotations`: {video: GTVideo} of --annotations)."""

  def __init__(self, cfg: ExtractConfig, run_id: str, annotations: dict):
    super().__init__()
    self.cfg, self.run_id, self.annotations = cfg, run_id, annotations

  def process(self, element) -> Iterable[dict]:
    cfg, (name, chunks) = self.cfg, element
    chunks = sorted(chunks, key=lambda c: c["index"])
    path = chunks[0]["video"]
    errors = [c["error"] for c in chunks if "error" in c]
    not_its_fault = [c["error"] for c in chunks if "error" in c and not c.get(VIDEO_FAULT)]
    if not_its_fault:  # (e.g. a full disk): its features, status record and gt.json entry
      # stay as they were, for a rerun to finish (status unwritten: not skipped by it)
      yield {"video": path, "status": FAILED, "reason": not_its_fault[0], "run": self.run_id}
      return
    frames = sum(c.get("frames", 0) for c in chunks)
    total = chunks[-1].get("total_frames")
    if not errors and total != frames:
      errors = [f"{path}: the chunks cover {frames} frames, the video has {total}"]
    # The record is read here, not taken from the driver's read at planning: another
    # run on the same OUT may have written the video's other streams since, and their
    # files must be kept and named, not removed as stale (one small read per video).
    old_record = storage.read_json(status_path(cfg.output_dir, cfg.split, name))
    labels = labels_of(cfg, self.annotations.get(name), previous_labels(old_record))
    features, stale = {}, []
    if errors:  # the video's own fault: its labels are kept for the next run; its old
      # features go (another file's)
      record = {"video": path, "status": FAILED, "reason": errors[0], LABELS_KEY: labels}
      stale = list(contract.STREAMS)
    else:
      features = {s: np.concatenate([c["features"][s] for c in chunks]).astype(np.float32)
                  for s in cfg.streams}
      made = chunks[0]["made"]
      settings, stale = provenance.other_streams(old_record, made)
      record = {"video": path, "status": OK, "frames": frames,
                "segments": len(features[cfg.streams[0]]), "duration": frames / contract.FPS,
                "chunks": len(chunks), "workers": sorted({c["worker"] for c in chunks}),
                "warnings": [c["warning"] for c in chunks if c.get("warning")],
                "provenance": settings, "video_identity": made["video_identity"]}
      if stale:
        record["warnings"].append(
            f"{path}: removed its {' and '.join(stale)} features, made with other settings "
            "or from another file of this name (extract them again to have them)")
    record["run"] = self.run_id
    record[GT_KEY] = gt_entry(cfg, record, labels)
    try:
      if old_record is None and features:
        storage.write_json(status_path(cfg.output_dir, cfg.split, name),
                           {"video": path, "status": WRITING, "run": self.run_id})
      for s, x in features.items():
        storage.write_npy(contract.feature_path(cfg.output_dir, cfg.split, s, name), x)
      storage.delete([contract.feature_path(cfg.output_dir, cfg.split, s, name) for s in stale])
      storage.write_json(status_path(cfg.output_dir, cfg.split, name), record)
    except UserError as e:  # OUT refused a write: the video fails (its status unwritten:
      # not skipped by a rerun, which reuses its chunks)
      yield {"video": path, "status": FAILED, "reason": str(e), "run": self.run_id}
      return
    if record["status"] == OK:
      storage.delete([chunk_path(cfg.output_dir, cfg.split, name, c["index"]) for c in chunks],
                     prune=True)
    yield record


class FinishRunFn(_WritesOutFn):
  """All records of the run -> gt.json merged, the failures list, the run's summary."""

  def __init__(self, cfg: ExtractConfig, run_id: str):
    super().__init__()
    self.cfg, self.run_id = cfg, run_id

  def process(self, records: list) -> Iterable[str]:
    cfg = self.cfg
    write_dataset_files(cfg, records)
    summary = summary_path(cfg.output_dir, self.run_id)
    storage.write_json(summary, records)
    yield summary


# ---------------------------------------------------------------- dataset files

def labels_of(cfg: ExtractConfig, gt, previous=None) -> dict:
  """A video's subset and annotations: from `gt` (its GTVideo of --annotations), else
  from `previous` (what its earlier status record holds, previous_labels: a rerun
  without --annotations, or with a file of other videos, keeps the labels given
  before), else subset = split and none."""
  if gt is not None:
    return {"subset": gt.subset, "annotations": [
        {"label": i.label, "segment": [i.start, i.end]} for i in gt.instances]}
  if isinstance(previous, dict) and {"subset", "annotations"} <= set(previous):
    return {"subset": previous["subset"], "annotations": previous["annotations"]}
  return {"subset": cfg.split, "annotations": []}


def previous_labels(record) -> Optional[dict]:
  """The labels a status record holds: its gt.json entry's, or a failed video's kept
  ones (LABELS_KEY); None for no record."""
  if not isinstance(record, dict):
    return None
  return record.get(GT_KEY) or record.get(LABELS_KEY)


def gt_entry(cfg: ExtractConfig, record: dict, labels: dict) -> Optional[dict]:
  """The gt.json entry of a video's status record (None for a failed video): duration,
  split, and the subset and annotations of `labels` (labels_of)."""
  if record.get("status") == FAILED:
    return None
  return {"subset": labels["subset"], "split": cfg.split, "duration": record["duration"],
          "annotations": labels["annotations"]}


def read_database(out: str) -> dict:
  """The `database` of OUT/gt.json ({} if absent); a UserError if it is not usable."""
  path = contract.gt_path(out)
  if not storage.exists(path):
    return {}
  data = storage.read_json(path, strict=True)
  if not isinstance(data, dict) or not isinstance(data.get("database", {}), dict):
    raise UserError(f"{path}: not ActivityNet ground truth (its 'database' must be an object "
                    "of videos); move it away or fix it")
  return data.get("database", {})


def in_other_splits(records: Sequence[str], split: str, names: Sequence[str]
                    ) -> dict[str, tuple[str, str]]:
  """{video name: (its split, its status record)} of the `names` whose status record in
  a split other than `split` (of `records`, OUT's status_records listed) owns a gt.json
  entry (merge_gt): extracting them into `split` would give one name two entries."""
  wanted = set(names)
  found = [(video.name(p), storage.name(storage.parent(p)), p) for p in records]
  found = [(n, s, p) for n, s, p in found if n in wanted and s != split]
  records = storage.concurrently(read_record, [p for _, _, p in found])
  return {n: (s, p) for (n, s, p), r in zip(found, records)
          if isinstance(r, dict) and r.get(GT_KEY)}


def not_made_here(out: str, records: Sequence[str], split: str, names: Sequence[str],
                  database: dict) -> dict[str, str]:
  """{video name: what OUT holds of it} of the `names` with a feature file in `split` or
  an entry in gt.json (`database`) but no status record in any split (of `records`,
  OUT's status_records listed), and for the entry not of extraction's form (its
  `split`): files no extraction made (another dataset's, or made by hand), which
  extracting the video would replace."""
  wanted = set(names)
  made = {video.name(p) for p in records}
  found = {}
  for p in storage.match(storage.join(out, contract.FEATURES_DIR, split, "*",
                                      "*" + contract.FEATURE_EXT)):
    n = video.name(p)
    if n in wanted and n not in made:
      found.setdefault(n, f"a feature file ({p})")
  for n in wanted - made - set(found):
    if n in database and not (isinstance(database[n], dict) and "split" in database[n]):
      found[n] = "a gt.json entry"
  return found


def merge_gt(out: str) -> None:
  """Writes OUT/gt.json from the status records of every split, without a lock.

  A status record holding GT_KEY owns its video's entry (None: the video failed, no
  entry; a failure in one split does not remove an entry another split's record owns);
  the entries of other videos already in gt.json (written by other means, or by a
  record from before GT_KEY) are kept. After each write the records are listed
  again, and while the listing (paths, times, sizes) differs from the one the write
  was made from, gt.json is made again. So the last writer of any set of concurrent
  runs wrote from a listing no record changed after, and every record written before
  it is in gt.json: no entry is lost on an object store either (with strongly
  consistent listings, as S3's and GCS's are), and no lock file is needed.
  """
  path = contract.gt_path(out)
  owned: dict[str, tuple] = {}  # status path -> (its stamp when read, (video, entry) or None)
  written = None
  for _ in range(MERGE_ROUNDS):
    listing = storage.stamps(status_records(out))
    if listing == written:
      return
    changed = [status for status, stamp in listing.items()
               if status not in owned or owned[status][0] != stamp]
    for status, record in zip(changed, storage.concurrently(read_record, changed)):
      owns = isinstance(record, dict) and GT_KEY in record
      owned[status] = (listing[status], (video.name(status), record[GT_KEY]) if owns else None)
    entries = {}
    for name, entry in filter(None, (owned[status][1] for status in sorted(listing))):
      if entry is not None or name not in entries:  # a failure in one split leaves
        entries[name] = entry  # another split's entry
    database = {n: e for n, e in read_database(out).items() if n not in entries}
    database.update({n: e for n, e in entries.items() if e is not None})
    storage.write_json(path, {"version": GT_VERSION, "database": database})
    written = listing
  logging.warning("%s: the status records kept changing over %d merges (other runs "
                  "writing); a later run completes gt.json", path, MERGE_ROUNDS)


def write_dataset_files(cfg: ExtractConfig, records: Sequence[dict]) -> None:
  """Writes or removes the failures list, then merges OUT/gt.json (merge_gt). (The list
  first: on a full disk it is the small file that says why each video failed.)"""
  failures = [{"video": r["video"], "reason": r["reason"]} for r in records
              if r.get("status") == FAILED]
  path = failures_path(cfg.output_dir, cfg.split)
  if failures:
    storage.write_json(path, failures)
  else:
    storage.delete([path])
  merge_gt(cfg.output_dir)
