"""Atomic file writes: a reader never sees a partial file."""

import contextlib
import errno
import json
import os
import shutil
import tempfile
from typing import Any, Iterator, Optional

from wtal_tf.errors import UserError, WriteError, write_error

MAX_NAME_BYTES = 255  # the longest file name ext4, XFS, Btrfs and APFS take (UTF-8 bytes)
MKSTEMP_RANDOM_CHARS = 8  # what tempfile.mkstemp puts between its prefix and suffix


def name_bytes(name: str) -> bytes:
  """A file name as the filesystem stores it: UTF-8, and the bytes of a name that is not
  UTF-8 as they were (Python reads them as surrogate characters)."""
  return name.encode("utf-8", errors="surrogateescape")


def printable(name: str) -> str:
  """`name` as text: a byte that is not UTF-8 written as \\xNN (JSON, Beam's coders and
  terminals take it)."""
  return name_bytes(name).decode("utf-8", errors="backslashreplace")


def shortened(name: str, max_bytes: int) -> str:
  """The longest start of `name` within `max_bytes` of UTF-8 (no character cut, and no
  byte that is not UTF-8): how much of a target's name its temporary file's name can
  carry."""
  return name_bytes(name)[:max(max_bytes, 0)].decode("utf-8", errors="ignore")


def _temporary_prefix(path: str, suffix: str = "") -> str:
  """The start of the name of `path`'s temporary file or folder (hidden, beside it) for
  tempfile.mkstemp/mkdtemp with `suffix`: as much of `path`'s name as keeps the whole
  name within MAX_NAME_BYTES (a name of any length the filesystem takes has a temporary
  name it takes too)."""
  room = MAX_NAME_BYTES - len(f"..{suffix}".encode()) - MKSTEMP_RANDOM_CHARS
  return f".{shortened(os.path.basename(os.path.abspath(path)), room)}."


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def ensure_writable_dir(path: str, what: str = "model dir") -> Optional[str]:
  """Creates `path` if needed; a UserError if it cannot be created or written. Returns
  the outermost folder it created (None: `path` existed), for remove_created."""
  created, parent = None, os.path.abspath(path)
  while not os.path.exists(parent) and parent != os.path.dirname(parent):
    created, parent = parent, os.path.dirname(parent)
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise UserError(f"{path}: cannot create {what} ({e.strerror})") from None
  if not os.access(path, os.W_OK | os.X_OK):
    raise UserError(f"{path}: {what} is not writable")
  return created


def remove_created(path: str, created: Optional[str]) -> None:
  """Removes the folders ensure_writable_dir(path) created (`created`: the outermost),
  from `path` up, as long as they are empty: a run that failed before writing anything
  leaves no empty folder behind."""
  folder = os.path.abspath(path)
  while created:
    try:
      os.rmdir(folder)
    except OSError:  # not empty (or gone): keep it and its parents
      return
    if folder == created:
      return
    folder = os.path.dirname(folder)


@contextlib.contextmanager
def writable_dir(path: str, what: str) -> Iterator[None]:
  """Runs the body with `path` a writable folder (ensure_writable_dir); when it fails,
  the folders made for it are removed if still empty (a run that failed before writing
  anything leaves no empty folder behind)."""
  created = ensure_writable_dir(path, what)
  try:
    yield
  except BaseException:
    remove_created(path, created)
    raise


def entries(folder: str) -> list[str]:
  """The names in `folder` ([] if it cannot be listed)."""
  try:
    return os.listdir(folder)
  except OSError:
    return []


def check_writable(path: str, what: str = "output file",
                   taken: Optional[dict[str, str]] = None) -> None:
  """A UserError unless `path` could be written (atomically) now: it is not a
  folder, its nearest existing parent folder is a writable folder, and it is none
  of the files `taken` ({path: what it is, e.g. "video of --video"}: what the
  command reads, or writes besides), which writing it would destroy."""
  path = os.fspath(path)
  for other, other_what in (taken or {}).items():
    if other and os.path.realpath(other) == os.path.realpath(path):
      raise UserError(f"{path}: cannot write the {what} (it is the {other_what})")
  if os.path.isdir(path):
    raise UserError(f"{path}: cannot write the {what} (it is a folder)")
  if len(name_bytes(os.path.basename(path))) > MAX_NAME_BYTES:
    raise UserError(f"{path}: cannot write the {what} (its name is over the "
                    f"{MAX_NAME_BYTES} bytes a file name may have)")
  parent = os.path.dirname(os.path.abspath(path))
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise UserError(f"{path}: cannot write the {what} ({parent} is not a folder)")
  if not os.access(parent, os.W_OK | os.X_OK):
    raise UserError(f"{path}: cannot write the {what} ({parent} is not writable)")
  try:  # (a folder the permissions allow may refuse files still: /proc, /sys, a full disk)
    fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=parent)
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise UserError(f"{path}: cannot write the {what} ({parent}: {e.strerror})") from None


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields a temporary path next to `path`; renames it onto `path` on success.

  On any exception the temporary file is removed and `path` is untouched, so
  the previous complete version (if any) survives; an OSError (a full disk) is raised
  as a WriteError naming `path`.
  """
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  suffix = ".tmp" + os.path.splitext(path)[1]
  try:
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path, suffix), suffix=suffix,
                               dir=directory)
  except OSError as e:
    raise write_error(e, path) from None
  os.close(fd)
  try:
    yield tmp
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
    os.replace(tmp, path)
  except BaseException as e:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    if isinstance(e, OSError):  # (a full disk: a UserError naming the file)
      raise write_error(e, path) from None
    raise


def write_text(path: str, text: str) -> None:
  """Writes `text` to `path` atomically."""
  with atomic_path(path) as tmp:
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())


def write_json(path: str, obj: Any, indent: int | None = None) -> None:
  """Serialises `obj` fully in memory, then writes it to `path` atomically."""
  write_text(path, json.dumps(obj, indent=indent) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str) -> Iterator[str]:
  """Yields a temporary directory next to `path`, renamed onto it on success.

  `path` must not exist; on any exception the partial directory is removed (an
  OSError is raised as a WriteError naming `path`).
  """
  if os.path.exists(path):
    raise FileExistsError(path)
  parent = os.path.dirname(os.path.abspath(path))
  try:
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=_temporary_prefix(path), dir=parent)
  except OSError as e:
    raise write_error(e, path) from None
  try:
    yield tmp
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    try:
      os.replace(tmp, path)
    except OSError as e:
      if e.errno in (errno.ENOTEMPTY, errno.EEXIST) and os.path.isdir(path):
        raise UserError(f"{path}: made by another run meanwhile: that one is kept, this "
                        "run's is discarded") from None
      raise
  except BaseException as e:
    shutil.rmtree(tmp, ignore_errors=True)
    if isinstance(e, OSError):  # (a full disk: a UserError naming the folder, not a
      # file in its temporary one)
      raise WriteError(e.errno, e.strerror or str(e), os.fspath(path)) from None
    raise


def fingerprint(path: str):
  """What changes when `path` is replaced or written (a run that read it can tell it is
  no longer what it read); None when it is not there."""
  try:
    st = os.stat(path)
  except OSError:
    return None
  return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns
