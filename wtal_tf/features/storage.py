"""Files of an extraction run through Beam's filesystems, so OUT may be any of them.

Paths go through `apache_beam.io.filesystems.FileSystems`: a local folder, or
gs://, s3://, hdfs://... when the matching Beam extra is installed. Every
write goes to a temporary name beside the target (TMP_MARK in it) and is
renamed onto the target once complete, so no reader ever sees a half file;
`remove_stale_temporaries` deletes the temporaries a killed writer left
behind, once they are older than STALE_TEMPORARY_S.
"""

import concurrent.futures
import contextlib
import io
import json
import math
import os
import re
import time
import uuid
from typing import Callable, Optional, TypeVar

import numpy as np
from apache_beam.io.filesystem import BeamIOError, FileMetadata
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from wtal_tf import io_utils
from wtal_tf.data import npy
from wtal_tf.errors import UserError

T = TypeVar("T")
TMP_MARK = ".wtal-tmp-"  # in the name of every temporary file written here
ANY_CLIENT_ERROR = Exception  # what a filesystem call may raise: besides BeamIOError and
# OSError, a cloud client's own types (google.api_core's NotFound for a missing gs://
# object, Forbidden, botocore's ClientError), which Beam does not wrap
CONCURRENT_CALLS = 16  # filesystem calls the driver has in flight at once (`concurrently`):
# an object store answers each read in tens of milliseconds, so a rerun over many videos
# would otherwise wait for one read after another
LISTS_ONE_FOLDER = ("hdfs",)  # schemes whose listing is one folder's entries (_matches)
RENAME_KEEPS_TARGET = ("hdfs",)  # schemes whose rename refuses an existing target (_replace)
DELETE_MATCHES = ("gs",)  # schemes whose Beam delete takes its path as a pattern (_delete_file)
LITERAL = {"[": "[\\[]", "*": "[*]", "?": "[?]"}  # a wildcard character in a pattern that
# matches that character (Beam's translate_pattern; `[\[]` matches a backslash too)
REPLACE_TRIES = 5  # renames of a temporary onto a file that keeps existing there
STALE_TEMPORARY_S = 600.0  # a temporary this old belongs to no live writer (writes take seconds)


def concurrently(fn: Callable[..., T], *iterables) -> list[T]:
  """[fn(*args) for args in zip(*iterables)], with up to CONCURRENT_CALLS calls at once
  (threads: the calls wait on a filesystem); the first exception raised is raised."""
  with concurrent.futures.ThreadPoolExecutor(CONCURRENT_CALLS) as pool:
    return list(pool.map(fn, *iterables))


def is_local(path: str) -> bool:
  return FileSystems.get_scheme(path) in (None, "file")


def join(*parts: str) -> str:
  return FileSystems.join(*parts)


def configure(options: PipelineOptions) -> None:
  """Gives the filesystems the run's Beam options (e.g. --s3_endpoint_url, S3 keys, GCS
  credentials): the driver reads and writes OUT outside the pipeline too (the
  pipeline's workers get them from Beam)."""
  FileSystems.set_options(options)


def exists(path: str) -> bool:
  """Whether `path` exists; a UserError naming it when the filesystem cannot tell
  (e.g. refused credentials)."""
  try:
    return FileSystems.exists(path)
  except ANY_CLIENT_ERROR as e:
    raise UserError(f"{path}: cannot read ({_reason(e)})") from None


def match(pattern: str) -> list[str]:
  """The paths of the files matching a glob `pattern` ([] when none or the folder is
  missing)."""
  return [m.path for m in _matches(pattern)]


def _matches(pattern: str) -> list[FileMetadata]:
  """FileMetadata of the files matching `pattern` (`*` within one folder, `**` across
  folders), on every filesystem ([] when none or the folder is missing).

  Beam matches a pattern against one listing of the folder before its first wildcard.
  That listing holds the files below it on a local disk (a walk) and on an object store
  (a prefix), but on HDFS it is that one folder's entries, subfolders included, so
  `a/*/b` or `a/**` would find nothing below a's subfolders: there the files are
  listed folder by folder (_hdfs_files) and matched as Beam matches them.
  """
  try:
    if FileSystems.get_scheme(pattern) not in LISTS_ONE_FOLDER or not _WILDCARD.search(pattern):
      return FileSystems.match([pattern])[0].metadata_list
    fixed = _WILDCARD.split(pattern, maxsplit=1)[0]  # the text before the first wildcard
    folder = fixed.rstrip("/") if fixed.endswith("/") else parent(fixed)
    return list(FileSystems.get_filesystem(pattern).match_files(_hdfs_files(folder), pattern))
  except ANY_CLIENT_ERROR:
    return []


_WILDCARD = re.compile(r"[*?\[]")


def _hdfs_files(folder: str) -> list[FileMetadata]:
  """The files below `folder` on a filesystem whose listing is one folder's entries, files
  and subfolders alike (a subfolder at size 0). An entry of size 0 is listed in turn: a
  folder lists its entries; a file cannot be listed (HDFS: "... is not a directory")."""
  files = []
  for entry in FileSystems.match([join(folder, "*")])[0].metadata_list:
    if entry.size_in_bytes:
      files.append(entry)
      continue
    try:
      files += _hdfs_files(entry.path)
    except ANY_CLIENT_ERROR:
      files.append(entry)  # an empty file
  return files


def read_bytes(path: str, strict: bool = False) -> Optional[bytes]:
  """The file's bytes; None if it does not exist. A file that exists but cannot be read
  (refused credentials, a lost connection): None too (it is made again), or with
  strict=True, after one more try, a UserError naming it: for a read whose None would
  be taken for "no such file" (a lost gt.json entry, a run reported cut off)."""
  try:
    return _read(path)
  except ANY_CLIENT_ERROR:
    if not strict or not exists(path):
      return None
  try:  # there but not read (or written just now): once more
    return _read(path)
  except ANY_CLIENT_ERROR as e:
    raise UserError(f"{path}: cannot read ({_reason(e)})") from None


def _read(path: str) -> bytes:
  with FileSystems.open(path, compression_type="uncompressed") as f:
    return f.read()


def read_json(path: str, strict: bool = False):
  """The parsed JSON file, or None if it is missing or not JSON (or unreadable:
  read_bytes' `strict`)."""
  data = read_bytes(path, strict)
  if data is None:
    return None
  try:
    return json.loads(data)
  except ValueError:
    return None


def npy_layout(path: str) -> Optional[tuple[np.dtype, tuple[int, ...]]]:
  """(dtype, shape) of a complete .npy array file, read from its header and its size
  alone (the data is not read); None if it is missing, not .npy or cut short."""
  try:
    with FileSystems.open(path, compression_type="uncompressed") as f:
      dtype, shape, _ = npy.read_header(f)  # (not numpy's: its parser is not thread-safe)
      data_offset = f.tell()
      size = f.seek(0, io.SEEK_END)  # the file's size, from the stream already open
  except ANY_CLIENT_ERROR:  # (ValueError: not .npy)
    return None
  if dtype.hasobject or size != data_offset + math.prod(shape) * dtype.itemsize:
    return None
  return dtype, tuple(shape)


def parent(path: str) -> str:
  return FileSystems.split(path)[0]


def name(path: str) -> str:
  """The last component of `path` (a file's or folder's name)."""
  return FileSystems.split(path)[1]


def write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` via a temporary beside it; a UserError naming `path` on failure.

  `data` must not be empty: Beam's S3 filesystem uploads in parts and cannot store an
  empty object (S3 rejects a multipart upload of no parts).
  """
  try:
    _write(path, data)
  except ANY_CLIENT_ERROR as e:
    raise UserError(f"{path}: cannot write ({_reason(e)})") from None


def check_writable(folder: str) -> None:
  """A UserError naming `folder` unless a file can be written into it (written, then
  deleted): a missing bucket or refused credentials fail here, before any work."""
  try:  # (the filesystem is made here: e.g. HDFS's fails without --hdfs_host)
    probe = join(folder, f"write-check{TMP_MARK}{uuid.uuid4().hex}")  # (stale if left)
    _write(probe, b"ok\n")
    _delete_file(probe)
  except ANY_CLIENT_ERROR as e:
    raise UserError(f"{folder}: cannot write ({_reason(e)})") from None


def _write(path: str, data: bytes) -> None:
  if not data:
    raise ValueError("an empty file cannot be stored on every Beam filesystem (S3)")
  directory, name = FileSystems.split(path)
  tail = f"{TMP_MARK}{uuid.uuid4().hex}"
  room = io_utils.MAX_NAME_BYTES - len(f".{tail}".encode())  # (a name of any length the
  # filesystem takes has a temporary name it takes too)
  tmp = FileSystems.join(directory, f".{io_utils.shortened(name, room)}{tail}")
  try:
    if is_local(path):
      os.makedirs(directory, exist_ok=True)
    with FileSystems.create(tmp, compression_type="uncompressed") as f:
      f.write(data)
    _replace(tmp, path)
  except ANY_CLIENT_ERROR:
    with contextlib.suppress(ANY_CLIENT_ERROR):
      _delete_file(tmp)
    raise


def _replace(tmp: str, path: str) -> None:
  """Renames `tmp` onto `path`. A local disk, S3 and GCS replace an existing `path`; HDFS
  refuses to (its rename answers false), so there the old file is deleted first and the
  rename tried again, up to REPLACE_TRIES times (another writer may put its own in
  between): `path` is then missing for a moment, never half written. Elsewhere a failed
  rename is raised and the old file kept."""
  for attempt in range(REPLACE_TRIES):
    try:
      FileSystems.rename([tmp], [path])
      return
    except ANY_CLIENT_ERROR:
      if (FileSystems.get_scheme(path) not in RENAME_KEEPS_TARGET
          or attempt == REPLACE_TRIES - 1 or not FileSystems.exists(path)):
        raise
      with contextlib.suppress(ANY_CLIENT_ERROR):
        _delete_file(path)


def _delete_file(path: str) -> None:
  """Deletes the file `path` and nothing else. Beam's local and GCS filesystems delete
  what the path matches as a pattern: a video named `a*` would take `ab`'s files with
  it, and the files of one named `match [2]` would stay. A local file is removed
  directly; on GCS each wildcard character of the path is given as LITERAL."""
  if is_local(path):
    os.remove(path)
  elif FileSystems.get_scheme(path) in DELETE_MATCHES:
    FileSystems.delete(["".join(LITERAL.get(c, c) for c in path)])
  else:  # S3 and HDFS delete the path itself
    FileSystems.delete([path])


def _reason(e: Exception) -> str:
  if isinstance(e, BeamIOError) and getattr(e, "exception_details", None):
    e = next(iter(e.exception_details.values()))
  if getattr(e, "strerror", None):
    return e.strerror
  first = e.args[0] if len(e.args) > 1 else None  # e.g. Beam's S3ClientError(message, code)
  if not isinstance(first, str):
    return str(e)
  # google-resumable-media's InvalidResponse("Request failed with status code", 404, ...)
  status = getattr(getattr(e, "response", None), "status_code", None)
  return f"{first} {status}" if isinstance(status, int) else first


def write_json(path: str, obj, indent: Optional[int] = 1) -> None:
  write_bytes(path, (json.dumps(obj, indent=indent) + "\n").encode("utf-8"))


def write_npy(path: str, array: np.ndarray) -> None:
  buffer = io.BytesIO()
  np.save(buffer, array, allow_pickle=False)
  write_bytes(path, buffer.getvalue())


def delete(paths, prune: bool = False) -> None:
  """Deletes the files that exist among `paths` (others are ignored); prune: also each
  one's folder, on a local filesystem, once it is empty."""
  for path in paths:
    with contextlib.suppress(ANY_CLIENT_ERROR):
      _delete_file(path)
    if prune and is_local(path):
      with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(path))


def stamps(pattern: str) -> dict[str, tuple[float, int]]:
  """{path: (when it was last written, in seconds since the epoch; its size in bytes)} of
  the files matching a glob `pattern` ({} when none or the folder is missing)."""
  return {m.path: (m.last_updated_in_seconds, m.size_in_bytes) for m in _matches(pattern)}


def modified(pattern: str) -> dict[str, float]:
  """{path: when it was last written} of the files matching `pattern` (see stamps)."""
  return {path: written for path, (written, _) in stamps(pattern).items()}


def remove_stale_temporaries(root: str, now: Optional[float] = None) -> int:
  """Deletes temporaries under `root` older than STALE_TEMPORARY_S; returns how many."""
  now = time.time() if now is None else now
  stale = [path for path, written in modified(FileSystems.join(root, "**")).items()
           if TMP_MARK in FileSystems.split(path)[1] and now - written > STALE_TEMPORARY_S]
  delete(stale)
  return len(stale)
