"""Feature extraction of a folder of videos as an Apache Beam pipeline, split below the video.

A video of more than ExtractConfig.chunk_segments segments becomes several
work items (chunks), which any workers extract; each decodes from the key
frame before its first segment (features.video.Blocks). The chunks of a video
are grouped (GroupByKey) into one [T, 1024] file per stream, bit-identical to
a one-pass extraction. Per-video records then flow to one last step that
writes gt.json, the failures list and the run's summary, which the driver
reads back: no shared disk is needed to know the outcome. A run with nothing
to extract (every video done, or refused before any work: a name already in
another split) writes those files from the driver, without starting Beam.

The files written under OUT: see features.beam_steps, which holds the steps.

A rerun skips a video whose features exist, validate (float32 [T, 1024], T =
floor(frames / 16)) and were made by the same settings, weights and video file
(provenance); a chunk already finished is not extracted again. An unusable
video (unreadable, corrupt, no frames, too short) is recorded as a failure;
the others go on. Two runs at once on the same folders both finish: a video
may then be extracted twice, harmlessly, and gt.json is complete without a
lock, on any filesystem (beam_steps.merge_gt).
"""

import contextlib
import functools
import logging
import os
import re
import threading
import time
from typing import Optional, Sequence
import unicodedata
import uuid

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
import numpy as np

from wtal_tf import io_utils
from wtal_tf.config import ExtractConfig
from wtal_tf import contract
from wtal_tf.data import groundtruth
from wtal_tf.data import made as made_lib
from wtal_tf.errors import UserError, first_few
from wtal_tf.features import provenance
from wtal_tf.features import storage
from wtal_tf.features import video
from wtal_tf.features import weights
from wtal_tf.features.beam_options import (direct_runner, pipeline_options,
                                           quiet_driver_logs, spread_over, worker_slots,
                                           workers_in_process)
from wtal_tf.features.beam_steps import (
    CHUNKS_DIR, FAILED, GT_KEY, MARK_EXT, OK, PROGRESS_DIR, RUNS_DIR, SKIPPED, STATUS_DIR,
    STATUS_EXT, SUMMARY_EXT, AssembleVideoFn, ExtractChunkFn, FinishRunFn, extraction_module,
    failures_path, forget_extractors, gt_entry, in_other_splits, labels_of, mark_key,
    not_made_here, previous_labels, read_database, status_path, status_records,
    stop_mark_path, summary_path, write_dataset_files)

PROGRESS_EVERY_S = 5.0  # seconds between the driver's progress lines
ABANDONED_PROGRESS_S = 24 * 3600.0  # a run's progress folder with no mark newer belongs
# to no live run (each finished chunk writes a mark; a chunk takes minutes)
MADE_CHECKED = 20  # status records of each other split read to compare how it was made
ABSENT_SHOWN = 3  # annotated videos absent from the video folder named in the log line


def _features_valid(cfg: ExtractConfig, name: str, frames: int) -> bool:
  expected = (contract.num_segments(frames), contract.FEATURE_DIM)
  for s in cfg.streams:
    layout = storage.npy_layout(contract.feature_path(cfg.output_dir, cfg.split, s, name))
    if layout != (np.dtype(np.float32), expected):
      return False
  return True


def completed(cfg: ExtractConfig, name: str, made: dict) -> tuple[Optional[dict], list[str]]:
  """(the status record, []) of a video whose outputs exist, validate and were made as
  `made` says (provenance); else (None, what differs: empty when nothing usable exists)."""
  record = storage.read_json(status_path(cfg.output_dir, cfg.split, name))
  if not isinstance(record, dict) or record.get("status") not in (OK, SKIPPED):
    return None, []
  changed = made_lib.changes(record.get("provenance"), made["settings"])
  if record.get("video_identity") != made["video_identity"]:
    changed.append("the video file changed")
  if not changed and not _features_valid(cfg, name, int(record.get("frames", 0))):
    changed.append("a feature file is missing or damaged")
  return (None, changed) if changed else (record, [])


def made_otherwise(out: str, split: str, settings: dict, streams: Sequence[str]) -> list[str]:
  """Warnings, one per other split of OUT holding features of `streams` made otherwise
  than `settings` make them (e.g. its videos extracted before a rerun of `split` with
  other weights or geometry): a model takes every split's features as one kind of
  input, so training on one and scoring the other gives wrong scores."""
  by_split: dict[str, list[str]] = {}
  for p in sorted(storage.match(status_records(out))):
    by_split.setdefault(storage.name(storage.parent(p)), []).append(p)
  checked = [(other, p) for other, found in by_split.items() if other != split
             for p in found[:MADE_CHECKED]]  # (a few reads per split, on any filesystem)
  ours = made_lib.restricted(settings, streams)
  otherwise: dict[str, list] = {}  # split -> [(video, differences)]
  of_split: dict[str, int] = {}
  records = storage.concurrently(storage.read_json, [p for _, p in checked])
  for (other, p), record in zip(checked, records):
    if not isinstance(record, dict) or record.get("status") not in (OK, SKIPPED) or (
        not isinstance(record.get("provenance"), dict)):
      continue
    of_split[other] = of_split.get(other, 0) + 1
    differ = made_lib.differences(made_lib.restricted(record["provenance"], streams), ours)
    if differ:
      otherwise.setdefault(other, []).append((video.name(p), differ))
  return [f"{storage.join(out, contract.FEATURES_DIR, other)}: features made otherwise than "
          f"this run's ({len(found)} of the {of_split[other]} videos checked; e.g. "
          f"{found[0][0]}, its vs this run's: {'; '.join(found[0][1])}); a model takes every "
          f"split's features as one kind of input: extract {other!r} again with these settings"
          for other, found in sorted(otherwise.items())]


# ---------------------------------------------------------------- work items

def _task(path: str, index: int, start: int, count: Optional[int], made: dict) -> dict:
  return {"video": path, "name": video.name(path), "index": index, "start": start,
          "count": count, "made": made}


def plan(path: str, chunk_segments: int, made: dict, workers: int = 1) -> list[dict]:
  """The work items of one video: chunks of at most chunk_segments segments, as many
  as a multiple of `workers` where possible (video.plan_chunks; the last one
  open-ended, so a wrong estimate of the length loses nothing)."""
  try:
    estimate = video.estimated_blocks(path, contract.SEGMENT_FRAMES)
  except UserError:
    estimate = None  # the worker reports why the file is unusable
  chunks = video.plan_chunks(estimate, chunk_segments, workers)
  return [_task(path, k, start, count, made) for k, (start, count) in enumerate(chunks)]


# ---------------------------------------------------------------- the driver

def remove_abandoned_progress(out: str, now: Optional[float] = None) -> int:
  """Deletes the progress folders of runs that wrote nothing there for
  ABANDONED_PROGRESS_S (killed drivers leave theirs), and the run summaries that old
  (a driver reads and deletes its run's at once; the workers of an interrupted driver's
  run may still write one, which nobody reads); returns how many runs were abandoned."""
  now = time.time() if now is None else now
  newest = {}
  marks = storage.modified(storage.join(out, PROGRESS_DIR, "*", "*"))
  for path, written in marks.items():
    run = storage.parent(path)
    newest[run] = max(newest.get(run, written), written)
  abandoned = {run for run, written in newest.items() if now - written > ABANDONED_PROGRESS_S}
  summaries = [path for path, written in storage.modified(summary_path(out, "*")).items()
               if now - written > ABANDONED_PROGRESS_S]
  storage.delete([p for p in marks if storage.parent(p) in abandoned] + summaries, prune=True)
  return len({os.path.basename(run) for run in abandoned}
             | {os.path.basename(p)[:-len(SUMMARY_EXT)] for p in summaries})


class _Progress(threading.Thread):
  """Logs videos done/total, segments/s and the time left, from this run's progress marks."""

  def __init__(self, cfg: ExtractConfig, run_id: str, tasks: Sequence[dict]):
    super().__init__(daemon=True)
    self.root = storage.join(cfg.output_dir, PROGRESS_DIR, run_id)
    self.split, self.start_time = cfg.split, time.time()
    self.chunks = {}
    for t in tasks:
      self.chunks.setdefault(mark_key(t["name"]), set()).add(t["index"])
    self.stopped = threading.Event()

  def report(self, final: bool = False) -> None:
    """One progress line (final: the run has ended)."""
    marks = storage.match(storage.join(self.root, "*" + MARK_EXT))  # one listing, no reads
    done, segments = {}, 0
    for path in marks:
      key, index, count = os.path.basename(path)[:-len(MARK_EXT)].rsplit(".", 2)
      done.setdefault(key, set()).add(int(index))
      segments += int(count)
    videos = sum(done.get(n, set()) >= c for n, c in self.chunks.items())
    elapsed = time.time() - self.start_time
    rate = segments / max(elapsed, 1e-9)
    left_chunks = sum(len(c) for c in self.chunks.values()) - len(marks)
    per_chunk = elapsed / len(marks) if marks else None
    eta = "?" if per_chunk is None else f"{left_chunks * per_chunk:.0f} s"
    left = ("writing the videos' files" if marks and not left_chunks and not final
            else f"about {eta} left")  # (after the last chunk: assembly, gt.json)
    logging.info("extract %s: %d/%d videos done, %.1f segments/s, %s", self.split, videos,
                 len(self.chunks), rate, left)

  def run(self):
    while not self.stopped.wait(PROGRESS_EVERY_S):
      self.report()


def run_pipeline(cfg: ExtractConfig, options: PipelineOptions, tasks: Sequence[dict],
                 skipped: Sequence[dict], annotations: dict, run_id: str) -> None:
  """Runs the Beam pipeline; its last step writes the run's summary."""
  runner, options = direct_runner(spread_over(options, max(len(tasks), 1)))
  p = beam.Pipeline(runner=runner, options=options)
  try:
    with p:
      extracted = (p | "work items" >> beam.Create(list(tasks))
                   | "spread" >> beam.Reshuffle()
                   | "extract" >> beam.ParDo(ExtractChunkFn(cfg, run_id))
                   | "by video" >> beam.GroupByKey()
                   | "assemble" >> beam.ParDo(AssembleVideoFn(cfg, run_id, annotations)))
      done = p | "already done" >> beam.Create(list(skipped))
      _ = ((extracted, done) | "records" >> beam.Flatten()
           | "all records" >> beam.combiners.ToList()
           | "dataset files" >> beam.ParDo(FinishRunFn(cfg, run_id)))
  finally:
    client = getattr(getattr(p, "result", None), "client", None)
    if client is not None:  # Beam's Dask runner leaves its cluster client open
      client.close()


_UNDER_BEAM = re.compile(r"^wtal_tf\.errors\.UserError: (.*)$", re.MULTILINE)
_BEAM_STEP = re.compile(r" \[while running '[^']*'\]$")


def user_error_line(e: Exception) -> Optional[str]:
  """The one line of a UserError that failed the pipeline: raised as such (in-process
  runners) or inside a runner's exception (a worker's traceback as text); else None."""
  found = [str(e)] if isinstance(e, UserError) else _UNDER_BEAM.findall(str(e))
  return _BEAM_STEP.sub("", found[-1]) if found else None


def match_annotations(given: dict, names: Sequence[str], source: str) -> dict:
  """The annotations of the videos being extracted; says how many matched, and fails when
  annotations are given but match none of the videos."""
  # Names compared in one Unicode form: macOS writes "é" as e + a combining accent (NFD),
  # most editors as one character (NFC).
  keys = {unicodedata.normalize("NFC", k): k for k in given}
  found = {n: keys[unicodedata.normalize("NFC", n)] for n in names
           if unicodedata.normalize("NFC", n) in keys}
  matched = {n: given[k] for n, k in found.items()}
  absent = sorted(set(given) - set(found.values()))
  logging.info("annotations %s: %d of %d videos annotated; %d annotated videos not in "
               "the video folder%s", source, len(matched), len(names), len(absent),
               f" ({first_few(absent, ABSENT_SHOWN)})" if absent else "")
  if given and not matched:
    raise UserError(f"{source}: its {len(given)} video keys match none of the {len(names)} "
                    f"videos (keys are file names without the extension, e.g. "
                    f"{names[0]!r}; the file has e.g. {next(iter(given))!r})")
  return matched


def _check_writable(cfg: ExtractConfig) -> None:
  """OUT must take the run's files (one line, before any work): on a local filesystem
  every folder the run writes; elsewhere a file written and deleted (a missing bucket
  or refused credentials fail here)."""
  if not storage.is_local(cfg.output_dir):
    storage.check_writable(cfg.output_dir)
    return
  io_utils.ensure_writable_dir(cfg.output_dir, "output dir")
  folders = [os.path.join(cfg.output_dir, contract.FEATURES_DIR, cfg.split, s)
             for s in cfg.streams] + [os.path.join(cfg.output_dir, d, cfg.split)
                                      for d in (STATUS_DIR, CHUNKS_DIR)]
  for folder in folders + [os.path.join(cfg.output_dir, d) for d in (RUNS_DIR, PROGRESS_DIR)]:
    io_utils.ensure_writable_dir(folder, "output folder")


def _skipped_or_planned(cfg: ExtractConfig, settings: dict, workers: int, name: str,
                        path: str, gt) -> tuple[Optional[dict], list[dict]]:
  """(its skipped record, []) for a video complete as `settings` make it, else (None, its
  work items). gt: its GTVideo of --annotations, or None."""
  try:
    made = {"settings": settings, "video_identity": provenance.video_identity(path)}
  except OSError as e:  # a link to a file that is not there (list_videos), or gone since
    why = (f"a link to {os.readlink(path)}, which does not exist" if os.path.islink(path)
           else e.strerror)
    return {"video": path, "status": FAILED, "reason": f"{path}: cannot read ({why})"}, []
  record, changed = completed(cfg, name, made)
  if record is None:
    if changed:
      logging.info("re-extracting %s: %s", name, "; ".join(changed))
    return None, plan(path, cfg.chunk_segments, made, workers)
  entry = gt_entry(cfg, record, labels_of(cfg, gt, previous_labels(record)))
  if record.get(GT_KEY) != entry:  # other annotations, or a record from before GT_KEY
    record = {**record, GT_KEY: entry}
    storage.write_json(status_path(cfg.output_dir, cfg.split, name), record)
  return {**record, "video": path, "status": SKIPPED}, []


def _refusals(cfg: ExtractConfig, paths: Sequence[str], names: Sequence[str],
              database: dict) -> dict[str, str]:
  """{video path: why it is not extracted} of the videos the run leaves alone: a name
  in another split of OUT, a name of files OUT holds that no extraction made, a name
  that is not text or too long for OUT's files (the first reason that applies)."""
  records = storage.match(status_records(cfg.output_dir))  # (one listing for both)
  taken = in_other_splits(records, cfg.split, names)
  foreign = not_made_here(cfg.output_dir, records, cfg.split, names, database)
  room = io_utils.MAX_NAME_BYTES - len(STATUS_EXT)  # bytes of a video's name
  reasons = {}
  for p, n in zip(paths, names):
    size = len(io_utils.name_bytes(n))
    if n in taken:
      reasons[p] = (f"a video named {n!r} is in {cfg.output_dir}'s split {taken[n][0]!r} "
                    f"already ({taken[n][1]}), and gt.json holds one entry per name: rename "
                    "the file, or delete that split's features and status record to move it")
    elif n in foreign:
      reasons[p] = (f"{cfg.output_dir} holds {foreign[n]} of a video named {n!r} that no "
                    "extraction made (no status record), which this one would replace: move "
                    "it away, or extract into another --output_dir")
    elif n != io_utils.printable(n):
      reasons[p] = "its name is not UTF-8 text, which gt.json and Beam need: rename it"
    elif size > room:
      reasons[p] = (f"its name is {size} bytes long, and its status record's "
                    f"({n}{STATUS_EXT}) would be over the {io_utils.MAX_NAME_BYTES} a file "
                    f"name may have: rename it (at most {room} bytes before the extension)")
  return {p: f"{io_utils.printable(p)}: not extracted: {why}" for p, why in reasons.items()}


def _run(cfg: ExtractConfig, options: PipelineOptions, tasks: Sequence[dict],
         skipped: Sequence[dict], annotations: dict) -> list[dict]:
  """Runs the pipeline with the driver's progress lines; returns the run's records."""
  # Workers in this process import TensorFlow here, before the progress lines start: its
  # first import silences file descriptor 2 for seconds (wtal_tf.startup), which would
  # swallow a progress line logged meanwhile.
  in_process = workers_in_process(options)
  if in_process:
    extraction_module()
  run_id = uuid.uuid4().hex
  progress = _Progress(cfg, run_id, tasks)
  progress.start()
  try:
    run_pipeline(cfg, options, tasks, skipped, annotations, run_id)
  except KeyboardInterrupt:  # (Ctrl-C) a cluster's workers go on after this process ends:
    with contextlib.suppress(Exception):  # the chunks they have not begun are not extracted
      storage.write_bytes(stop_mark_path(cfg.output_dir, run_id), b"interrupted\n")
    raise
  except Exception as e:  # pylint: disable=broad-exception-caught
    line = user_error_line(e)
    if line is None:
      raise  # not a user error: a bug, with its traceback
    raise UserError(line) from None
  finally:
    progress.stopped.set()
    progress.join()  # a report under way ends before the last one: no stale line after it
    if in_process:
      forget_extractors()
  progress.report(final=True)
  summary = summary_path(cfg.output_dir, run_id)
  records = storage.read_json(summary, strict=True)
  storage.delete([summary] + storage.match(storage.join(cfg.output_dir, PROGRESS_DIR, run_id,
                                                        "*")), prune=True)
  if not isinstance(records, list):
    raise UserError(f"{cfg.output_dir}: the pipeline ended without writing its summary "
                    f"({RUNS_DIR}/{run_id}{SUMMARY_EXT}): the run was cut off (on a cluster: its "
                    "scheduler or workers lost?); run the command again: finished chunks "
                    "are kept")
  return records


def extract(cfg: ExtractConfig) -> dict[str, dict]:
  """Extracts every video of cfg.video_dir; returns {video name: status record}.

  Raises UserError (after writing everything else) if some videos failed.
  """
  options = pipeline_options(cfg.pipeline_args)  # every Beam argument checked before any work
  for required in ("video_dir", "output_dir"):  # (after the unknown flags: a misspelt one)
    if not getattr(cfg, required):
      raise UserError(f"--{required} is required")
  storage.configure(options)
  quiet_driver_logs()
  paths, ignored = video.list_videos(cfg.video_dir)
  names = [video.name(p) for p in paths]
  given = groundtruth.load_activitynet(cfg.annotations) if cfg.annotations else {}
  annotations = match_annotations(given, names, cfg.annotations) if cfg.annotations else {}
  weights.check_weights(cfg, cfg.streams)
  workers = cfg.chunk_workers or worker_slots(options) or 1  # (asks a Dask scheduler)
  _check_writable(cfg)  # (makes OUT's folders: after everything that can fail without it)
  database = read_database(cfg.output_dir)  # a bad OUT/gt.json fails now, not after the work
  removed = storage.remove_stale_temporaries(cfg.output_dir)
  abandoned = remove_abandoned_progress(cfg.output_dir)
  settings = provenance.settings(cfg, {s: provenance.weights_identity(cfg, s)
                                       for s in cfg.streams})
  logging.info("extract %s: %d video%s (%d other files ignored), streams %s, chunks planned "
               "for %d worker%s -> %s%s%s", cfg.split, len(paths), "s" * (len(paths) != 1),
               len(ignored), ",".join(cfg.streams), workers, "s" * (workers != 1), cfg.output_dir,
               f"; removed {removed} stale temporary files" if removed else "",
               f"; removed what {abandoned} abandoned runs left (progress marks, summaries)"
               if abandoned else "")
  reasons = _refusals(cfg, paths, names, database)
  refused = [{"video": io_utils.printable(p), "status": FAILED, "reason": reasons[p]}
             for p in paths if p in reasons]
  kept = [(p, n) for p, n in zip(paths, names) if p not in reasons]
  prepared = storage.concurrently(  # (reads of OUT, a few per video)
      functools.partial(_skipped_or_planned, cfg, settings, workers), [n for _, n in kept],
      [p for p, _ in kept], [annotations.get(n) for _, n in kept])
  skipped = refused + [record for record, _ in prepared if record is not None]
  tasks = [task for _, planned in prepared for task in planned]
  if tasks:
    records = _run(cfg, options, tasks, skipped, annotations)
  else:  # nothing to extract: the dataset files without starting Beam's workers
    write_dataset_files(cfg, skipped)
    records = list(skipped)
  records = {video.name(r["video"]): r for r in records}
  for r in records.values():
    if r["status"] == FAILED:
      logging.error("%s", r["reason"])
    for warning in r.get("warnings", []):
      logging.warning("%s", warning)
  counts = {k: sum(r["status"] == k for r in records.values()) for k in (OK, SKIPPED, FAILED)}
  logging.info("extract %s: %d extracted, %d already done, %d failed -> %s", cfg.split,
               counts[OK], counts[SKIPPED], counts[FAILED], cfg.output_dir)
  for warning in (made_otherwise(cfg.output_dir, cfg.split, settings, cfg.streams)
                  if counts[OK] else []):  # (a run that extracted nothing changed nothing)
    logging.warning("%s", warning)
  if counts[FAILED]:
    raise UserError(f"{counts[FAILED]} of {len(paths)} videos failed; list in "
                    f"{failures_path(cfg.output_dir, cfg.split)}")
  return records
