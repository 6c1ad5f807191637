"""OUT on a non-local Beam filesystem: an in-memory object store defined here (scheme
memtest://; no folders; rename is a copy then a delete; a writer's bytes appear only when
it closes). The Beam extraction into it equals one into a local folder byte for byte and
skips on a rerun; features.storage keeps its contract on it (whole files or none, failed
writes leave nothing behind)."""

import errno
import hashlib
import io
import json
import threading
import time

import numpy as np
import pytest
from apache_beam.io.filesystem import (BeamIOError, CompressedFile, CompressionTypes,
                                       FileMetadata, FileSystem)
from apache_beam.io.filesystems import FileSystems

from chunk_runs import extract_counting_chunks, run_killed_after
from conftest import assert_equals_local_run, small_rgb_config
from video_helpers import CHUNKED_CHUNKS, CHUNKED_FRAMES, smooth_frames, write_video
from wtal_tf import contract
from wtal_tf.errors import UserError
from wtal_tf.features import beam_pipeline as pipeline
from wtal_tf.features import beam_steps as steps
from wtal_tf.features import storage

SCHEME = "memtest"
PREFIX = SCHEME + "://"
OUT = PREFIX + "out"
FRAMES = CHUNKED_FRAMES

STORE: dict[str, tuple[bytes, float]] = {}  # path -> (bytes, last updated in seconds)
CREATED: list[str] = []  # every path create() was called with, in order
FAIL_ON_CLOSE: set[str] = set()  # a writer whose path contains one of these fails on close
DENY_ON_CLOSE: set[str] = set()  # ... fails as a cloud client does: not with an OSError
DENY_ON_OPEN: set[str] = set()  # a reader of a path containing one of these is refused (403)
_LOCK = threading.Lock()  # the pipeline's worker threads share STORE
OPEN_DELAY_S = [0.0]  # how long each open() waits, as an object store's round trip does
OPENS = {"now": 0, "most": 0}  # open() calls in flight, and the most at once


class ClientError(Exception):
  """A cloud client's own error type (as google.api_core.exceptions.Forbidden or botocore's
  ClientError): an Exception, not an OSError or a BeamIOError."""


def _missing(path: str) -> FileNotFoundError:
  return FileNotFoundError(errno.ENOENT, "no such object", path)


class _Writer(io.BytesIO):
  """Buffers what is written; the bytes appear at `path` only once close() succeeds, as an
  object store's upload does (a reader never sees part of a file)."""

  def __init__(self, path: str):
    super().__init__()
    self.path, self.finished = path, False

  def close(self):
    if self.finished:  # closed already (or failed): never commit twice, e.g. from __del__
      super().close()
      return
    self.finished = True
    try:
      data = self.getvalue()
      if any(part in self.path for part in FAIL_ON_CLOSE):
        raise OSError(errno.EIO, "injected upload failure", self.path)
      if any(part in self.path for part in DENY_ON_CLOSE):
        raise ClientError("403 POST upload: permission denied")
      with _LOCK:
        STORE[self.path] = (data, time.time())
    finally:
      super().close()


class MemFileSystem(FileSystem):
  """An in-memory object store on STORE, shaped like Beam's GCSFileSystem: flat keys,
  prefix listing, no folders, rename = copy + delete."""

  @classmethod
  def scheme(cls):
    return SCHEME

  @staticmethod
  def _check(path: str) -> str:
    if not path.startswith(PREFIX):
      raise ValueError(f"{path!r} is not a {PREFIX} path")
    return path

  def join(self, basepath, *paths):
    path = self._check(basepath)
    for p in paths:
      path = path.rstrip("/") + "/" + p.lstrip("/")
    return path

  def split(self, path):
    path = self._check(path.strip())
    head, sep, tail = path[len(PREFIX):].rpartition("/")
    return (PREFIX + head, tail) if sep else (path, "")

  def mkdirs(self, path):
    pass  # no folders

  def has_dirs(self):
    return False

  def _list(self, dir_or_prefix):
    with _LOCK:
      found = [(p, len(d), t) for p, (d, t) in sorted(STORE.items())
               if p.startswith(dir_or_prefix)]
    for path, size, updated in found:
      yield FileMetadata(path, size, updated)

  @staticmethod
  def _wrap(raw, path, compression_type):
    compression_type = FileSystem._get_compression_type(path, compression_type)
    if compression_type == CompressionTypes.UNCOMPRESSED:
      return raw
    return CompressedFile(raw, compression_type=compression_type)

  def create(self, path, mime_type="application/octet-stream",
             compression_type=CompressionTypes.AUTO):
    with _LOCK:
      CREATED.append(self._check(path))
    return self._wrap(_Writer(path), path, compression_type)

  def open(self, path, mime_type="application/octet-stream",
           compression_type=CompressionTypes.AUTO):
    with _LOCK:
      OPENS["now"] += 1
      OPENS["most"] = max(OPENS["most"], OPENS["now"])
    try:
      time.sleep(OPEN_DELAY_S[0])
      with _LOCK:
        entry = STORE.get(path)
    finally:
      with _LOCK:
        OPENS["now"] -= 1
    if entry is None:
      raise BeamIOError("Open operation failed", {path: _missing(path)})
    if any(part in path for part in DENY_ON_OPEN):
      raise ClientError("403 GET: permission denied")
    return self._wrap(io.BytesIO(entry[0]), path, compression_type)

  def copy(self, source_file_names, destination_file_names):
    assert len(source_file_names) == len(destination_file_names)
    exceptions = {}
    with _LOCK:
      for source, destination in zip(source_file_names, destination_file_names):
        self._check(destination)
        if source not in STORE:
          exceptions[(source, destination)] = _missing(source)
        else:
          STORE[destination] = (STORE[source][0], time.time())
    if exceptions:
      raise BeamIOError("Copy operation failed", exceptions)

  def rename(self, source_file_names, destination_file_names):
    assert len(source_file_names) == len(destination_file_names)
    exceptions = {}
    for source, destination in zip(source_file_names, destination_file_names):
      try:
        self.copy([source], [destination])
        self.delete([source])
      except BeamIOError as e:
        exceptions[(source, destination)] = next(iter(e.exception_details.values()))
    if exceptions:
      raise BeamIOError("Rename operation failed", exceptions)

  def exists(self, path):
    with _LOCK:
      return path in STORE

  def _entry(self, path, operation):
    with _LOCK:
      entry = STORE.get(path)
    if entry is None:
      raise BeamIOError(f"{operation} operation failed", {path: _missing(path)})
    return entry

  def size(self, path):
    return len(self._entry(path, "Size")[0])

  def last_updated(self, path):
    return self._entry(path, "Last updated")[1]

  def checksum(self, path):
    return hashlib.sha256(self._entry(path, "Checksum")[0]).hexdigest()

  def metadata(self, path):
    data, updated = self._entry(path, "Metadata")
    return FileMetadata(path, len(data), updated)

  def delete(self, paths):
    """Deletes objects; a path ending in "/" deletes every object below it."""
    exceptions = {}
    with _LOCK:
      for path in paths:
        below = [p for p in STORE if p.startswith(path)] if path.endswith("/") else [path]
        for p in below:
          if STORE.pop(p, None) is None:
            exceptions[p] = _missing(p)
    if exceptions:
      raise BeamIOError("Delete operation failed", exceptions)


@pytest.fixture(autouse=True)
def empty_store():
  for state in (STORE, CREATED, FAIL_ON_CLOSE, DENY_ON_CLOSE, DENY_ON_OPEN):
    state.clear()
  OPENS.update(now=0, most=0)
  yield
  for state in (STORE, CREATED, FAIL_ON_CLOSE, DENY_ON_CLOSE, DENY_ON_OPEN):
    state.clear()
  OPEN_DELAY_S[0] = 0.0


def relative(path: str) -> str:
  assert path.startswith(OUT + "/"), path
  return path[len(OUT) + 1:]


def test_the_memtest_scheme_resolves_to_the_fake_filesystem():
  assert FileSystems.get_scheme(OUT + "/x") == SCHEME
  assert isinstance(FileSystems.get_filesystem(OUT + "/x"), MemFileSystem)
  assert not storage.is_local(OUT) and storage.is_local("/tmp/x")
  assert storage.join(OUT, "a", "b.npy") == OUT + "/a/b.npy"
  assert contract.feature_path(OUT, "test", "rgb", "v") == storage.join(
      OUT, contract.FEATURES_DIR, "test", "rgb", "v" + contract.FEATURE_EXT)


# ---------------------------------------------------------------- features.storage


def test_storage_round_trips_lists_and_deletes_on_an_object_store():
  storage.write_bytes(OUT + "/a/raw.bin", b"\x00\x01")
  assert storage.read_bytes(OUT + "/a/raw.bin") == b"\x00\x01"
  storage.write_json(OUT + "/a/obj.json", {"k": [1, 2]})
  assert storage.read_json(OUT + "/a/obj.json") == {"k": [1, 2]}
  x = np.arange(12, dtype=np.float32).reshape(3, 4)
  storage.write_npy(OUT + "/a/b/x.npy", x)
  assert storage.npy_layout(OUT + "/a/b/x.npy") == (np.float32, (3, 4))
  got = np.load(io.BytesIO(storage.read_bytes(OUT + "/a/b/x.npy")), allow_pickle=False)
  assert got.dtype == np.float32 and np.array_equal(got, x)
  storage.write_bytes(OUT + "/a/b/cut.npy", storage.read_bytes(OUT + "/a/b/x.npy")[:-4])
  assert storage.npy_layout(OUT + "/a/b/cut.npy") is None  # the header alone says (3, 4)
  storage.delete([OUT + "/a/b/cut.npy"])
  assert storage.exists(OUT + "/a/obj.json") and not storage.exists(OUT + "/a/none.json")
  assert storage.read_bytes(OUT + "/a/none") is None and storage.read_json(OUT + "/a/none") is None
  assert storage.npy_layout(OUT + "/a/obj.json") is None  # not an array
  assert storage.npy_layout(OUT + "/a/none.npy") is None
  # Every write went through a temporary beside its target, renamed away.
  assert len(CREATED) == 4 and all(storage.TMP_MARK in p for p in CREATED)
  assert [FileSystems.split(p)[0] for p in CREATED] == [OUT + "/a"] * 2 + [OUT + "/a/b"] * 2
  assert sorted(map(relative, STORE)) == ["a/b/x.npy", "a/obj.json", "a/raw.bin"]
  # '*' stays within a folder, '**' goes below; a missing folder matches nothing.
  assert sorted(map(relative, storage.match(OUT + "/a/*"))) == ["a/obj.json", "a/raw.bin"]
  assert len(storage.match(OUT + "/**")) == 3
  assert storage.match(OUT + "/missing/*") == [] and storage.match(OUT + "/a/none") == []
  stamps = storage.stamps(OUT + "/a/*")  # (when written, size) of each file
  assert {relative(p): size for p, (_, size) in stamps.items()} == {
      f"a/{name}": len(STORE[f"{OUT}/a/{name}"][0]) for name in ("obj.json", "raw.bin")}
  assert storage.modified(OUT + "/a/*") == {p: t for p, (t, _) in stamps.items()}
  # Deleting ignores missing paths; prune has no folders to remove here.
  storage.delete([OUT + "/a/raw.bin", OUT + "/a/none"], prune=True)
  assert sorted(map(relative, STORE)) == ["a/b/x.npy", "a/obj.json"]
  storage.delete([OUT + "/a/b/x.npy"], prune=True)
  assert sorted(map(relative, STORE)) == ["a/obj.json"]


def test_a_reader_never_sees_a_file_being_written():
  with FileSystems.create(OUT + "/f", compression_type=CompressionTypes.UNCOMPRESSED) as f:
    f.write(b"part")
    assert not storage.exists(OUT + "/f") and storage.read_bytes(OUT + "/f") is None
  assert storage.read_bytes(OUT + "/f") == b"part"


def test_stale_temporaries_are_removed_and_live_ones_kept():
  now = time.time()
  old = now - storage.STALE_TEMPORARY_S - 1
  stale = OUT + f"/features/test/rgb/.v.npy{storage.TMP_MARK}dead"
  live = OUT + f"/gt.json{storage.TMP_MARK}writing"
  STORE.update({stale: (b"half", old), live: (b"half", now),
                OUT + "/features/test/rgb/old.npy": (b"kept", old)})
  assert storage.remove_stale_temporaries(OUT) == 1
  assert sorted(map(relative, STORE)) == ["features/test/rgb/old.npy",
                                          f"gt.json{storage.TMP_MARK}writing"]
  assert storage.remove_stale_temporaries(OUT, now=now + storage.STALE_TEMPORARY_S + 1) == 1
  assert storage.remove_stale_temporaries(PREFIX + "nothing-here") == 0


def test_a_failed_write_leaves_neither_the_target_nor_a_temporary():
  target = OUT + "/features/test/rgb/v.npy"
  storage.write_npy(target, np.zeros((1, 2), np.float32))
  before = STORE[target]
  FAIL_ON_CLOSE.add("v.npy")
  with pytest.raises(UserError, match=r"features/test/rgb/v.npy: cannot write \(injected "
                                      r"upload failure\)"):
    storage.write_npy(target, np.ones((1, 2), np.float32))
  assert STORE == {target: before}  # the old file intact, no temporary
  with pytest.raises(UserError, match="cannot write"):
    storage.write_json(OUT + "/new/v.npy.json", {})  # a new file: nothing at all
  assert STORE == {target: before}
  assert not [p for p in STORE if storage.TMP_MARK in p]
  FAIL_ON_CLOSE.clear()
  DENY_ON_CLOSE.add("v.npy")  # a cloud client's error is one line too
  with pytest.raises(UserError, match=r"v.npy: cannot write \(403 POST upload: permission "
                                      r"denied\)$"):
    storage.write_npy(target, np.ones((1, 2), np.float32))
  assert STORE == {target: before}


# ---------------------------------------------------------------- the Beam extraction


def without_run(record: dict) -> dict:
  return {k: v for k, v in record.items() if k != "run"}


def test_extraction_into_an_object_store_equals_a_local_one_and_skips_on_a_rerun(chunked_videos,
                                                                                 tmp_path):
  local_out = tmp_path / "out"
  local = pipeline.extract(small_rgb_config(chunked_videos, local_out))
  cfg = small_rgb_config(chunked_videos, OUT)
  records = pipeline.extract(cfg)
  assert {n: r["status"] for n, r in records.items()} == {n: steps.OK for n in FRAMES}
  assert {n: r["chunks"] for n, r in records.items()} == CHUNKED_CHUNKS
  assert {n: without_run(r) for n, r in records.items()} == {
      n: without_run(r) for n, r in local.items()}
  # The long video's chunks went through the store, and were removed once assembled.
  chunks_root = storage.join(OUT, steps.CHUNKS_DIR) + "/"
  assert len([p for p in CREATED if p.startswith(chunks_root)]) == 3
  # The same files as the local run, byte for byte where nothing names the run.
  stored = {relative(p): data for p, (data, _) in STORE.items()}
  assert not [p for p in stored if storage.TMP_MARK in p]
  assert_equals_local_run(stored, local_out)
  assert not [p for p in stored if p.startswith((steps.CHUNKS_DIR, steps.RUNS_DIR,
                                                 steps.PROGRESS_DIR))]
  for name, n in FRAMES.items():
    path = contract.feature_path(OUT, "test", "rgb", name)
    x = np.load(io.BytesIO(STORE[path][0]), allow_pickle=False)
    want = np.load(contract.feature_path(str(local_out), "test", "rgb", name))
    assert x.dtype == np.float32 and x.shape == (n // contract.SEGMENT_FRAMES,
                                                 contract.FEATURE_DIM)
    assert x.tobytes() == want.tobytes()
    status = relative(steps.status_path(OUT, "test", name))
    assert without_run(json.loads(stored[status])) == without_run(
        json.loads((local_out / status).read_text()))
  gt = json.loads(stored[contract.GT_FILE])
  assert gt["version"] == steps.GT_VERSION
  assert set(gt["database"]) == set(FRAMES)
  # A rerun finds every video done: no feature, status or chunk file is written again.
  features_before = {p: v for p, v in STORE.items() if p.startswith(
      storage.join(OUT, contract.FEATURES_DIR) + "/")}
  CREATED.clear()
  OPEN_DELAY_S[0], OPENS["most"] = 0.2, 0  # (the store now answers as a remote one)
  again = pipeline.extract(cfg)
  assert OPENS["most"] > 1  # the videos' records were read at once, not one by one
  assert {n: r["status"] for n, r in again.items()} == {n: steps.SKIPPED for n in FRAMES}
  rewritten = [p for p in CREATED if relative(p).startswith(
      (contract.FEATURES_DIR + "/", steps.STATUS_DIR + "/", steps.CHUNKS_DIR + "/"))]
  assert rewritten == []
  assert {p: STORE[p] for p in features_before} == features_before  # same bytes, same time
  assert sorted(map(relative, STORE)) == sorted(stored)
  assert not [p for p in STORE if storage.TMP_MARK in p]
  assert json.loads(STORE[storage.join(OUT, contract.GT_FILE)][0])["database"] == gt["database"]


def test_gt_json_is_merged_from_records_read_at_once():
  entries = {f"v{k}": {"subset": "test", "split": "test", "duration": 1.0 + k,
                       "annotations": []} for k in range(2 * storage.CONCURRENT_CALLS)}
  for name, entry in entries.items():
    storage.write_json(steps.status_path(OUT, "test", name),
                       {"status": steps.OK, steps.GT_KEY: entry})
  storage.write_json(steps.status_path(OUT, "test", "failed"),
                     {"status": steps.FAILED, steps.GT_KEY: None})
  OPEN_DELAY_S[0] = 0.05
  steps.merge_gt(OUT)
  assert storage.read_json(contract.gt_path(OUT))["database"] == entries
  assert 1 < OPENS["most"] <= storage.CONCURRENT_CALLS


def test_a_file_that_cannot_be_read_is_not_taken_for_a_missing_one_where_that_loses_data(
    tmp_path):
  storage.write_bytes(OUT + "/a.json", b"{}")
  DENY_ON_OPEN.add("a.json")
  assert storage.read_bytes(OUT + "/a.json") is None  # e.g. a chunk or a record: made again
  with pytest.raises(UserError, match=rf"^{OUT}/a.json: cannot read \(403 GET: permission "
                                      r"denied\)$"):
    storage.read_json(OUT + "/a.json", strict=True)
  assert storage.read_json(OUT + "/none.json", strict=True) is None
  # gt.json is not made without the entry of a record it cannot read ...
  for name in ("v0", "v1"):
    storage.write_json(steps.status_path(OUT, "test", name), {
        "status": steps.OK, steps.GT_KEY: {"subset": "test", "duration": 1.0,
                                           "annotations": []}})
  DENY_ON_OPEN.add("/v1.json")
  with pytest.raises(UserError, match=r"status/test/v1.json: cannot read"):
    steps.merge_gt(OUT)
  assert not storage.exists(contract.gt_path(OUT))
  DENY_ON_OPEN.discard("/v1.json")
  steps.merge_gt(OUT)
  gt = STORE[contract.gt_path(OUT)]
  # ... nor remade from a gt.json it cannot read (before: "not ActivityNet ground truth").
  DENY_ON_OPEN.add(contract.GT_FILE)
  with pytest.raises(UserError, match=rf"{contract.GT_FILE}: cannot read \(403"):
    steps.merge_gt(OUT)
  assert STORE[contract.gt_path(OUT)] == gt
  # A run whose summary cannot be read says so (before: "the run was cut off").
  DENY_ON_OPEN.clear()
  (tmp_path / "bad.mkv").write_bytes(b"not a video")
  DENY_ON_OPEN.add(steps.RUNS_DIR + "/")
  with pytest.raises(UserError, match=rf"^{OUT}/{steps.RUNS_DIR}/[^ ]+\.json: cannot read"):
    pipeline.extract(small_rgb_config(tmp_path, OUT))


def test_a_restart_reads_the_finished_chunks_back_from_the_object_store(chunked_videos):
  cfg = small_rgb_config(chunked_videos, OUT)
  path = str(chunked_videos / "long.mkv")
  extractor = run_killed_after(cfg, path, 2)  # two of its three chunks
  assert sorted(relative(p) for p in STORE if relative(p).startswith(steps.CHUNKS_DIR)) == [
      f"{steps.CHUNKS_DIR}/test/long/{k}.npz" for k in range(2)]
  records, starts = extract_counting_chunks(cfg, path)
  assert records["long"]["status"] == steps.OK
  assert starts == [2 * cfg.chunk_segments]
  whole = extractor(path).features["rgb"]
  got = storage.read_bytes(contract.feature_path(OUT, "test", "rgb", "long"))
  assert np.load(io.BytesIO(got), allow_pickle=False).tobytes() == whole.tobytes()
  assert not [p for p in STORE if relative(p).startswith(steps.CHUNKS_DIR)]


def test_an_unusable_video_is_listed_in_the_object_store_until_it_is_fixed(tmp_path):
  bad = tmp_path / "bad.mkv"
  bad.write_bytes(b"not a video")
  cfg = small_rgb_config(tmp_path, OUT)
  failures = steps.failures_path(OUT, "test")
  with pytest.raises(UserError, match=f"1 of 1 videos failed; list in {failures}"):
    pipeline.extract(cfg)
  assert [f["video"] for f in storage.read_json(failures)] == [str(bad)]
  assert storage.read_json(steps.status_path(OUT, "test", "bad"))["status"] == steps.FAILED
  assert storage.read_json(contract.gt_path(OUT))["database"] == {}
  write_video(bad, smooth_frames(contract.SEGMENT_FRAMES, 48, 64))
  assert pipeline.extract(cfg)["bad"]["status"] == steps.OK
  assert not storage.exists(failures)
  assert set(storage.read_json(contract.gt_path(OUT))["database"]) == {"bad"}
  assert not [p for p in STORE if storage.TMP_MARK in p]


def test_an_unwritable_folder_is_one_line_naming_it_and_leaves_nothing():
  storage.check_writable(OUT)  # writable: the probe is written, then removed
  assert STORE == {}
  FAIL_ON_CLOSE.add("write-check")
  with pytest.raises(UserError, match=rf"^{OUT}: cannot write \(injected upload failure\)$"):
    storage.check_writable(OUT)
  assert STORE == {}
  FAIL_ON_CLOSE.clear()


def test_no_empty_file_is_written():
  """Beam's S3 filesystem cannot store an empty object (a multipart upload of no parts):
  every file the run writes has content, and an empty one is refused everywhere."""
  with pytest.raises(UserError, match="empty file"):
    storage.write_bytes(OUT + "/mark.done", b"")
  assert STORE == {}
