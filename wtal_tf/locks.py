"""Runs at once on the same folder: one writer of a model dir, one replacer of a file.

Both are advisory locks (flock) that go with the process however it ends (a SIGKILL
too): nothing stale is left to clear by hand. Where a filesystem has no such locks
(some network filesystems), the work runs unlocked after a warning.
"""

import contextlib
import datetime
import errno
import fcntl
import os
import socket
from typing import Iterator

from absl import logging

from wtal_tf.errors import UserError, write_error

LOCK_FILE = ".wtal_tf.lock"  # in a folder one process writes at a time: who holds it
_held: dict[str, int] = {}  # {folder (real path): depth} of the folders this process holds
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.EBADF)


def _unlocked(path: str, e: OSError) -> None:
  logging.warning("%s: cannot lock (%s): runs at once on it are not refused", path,
                  e.strerror or e)


def _holder() -> str:
  since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
  return f"pid {os.getpid()} on {socket.gethostname()}, since {since}"


@contextlib.contextmanager
def sole_writer(folder: str, what: str, flag: str) -> Iterator[None]:
  """Holds `folder` for this process while the body runs (again inside: no-op).

  Another process holding it is a UserError naming `folder` and what that process is
  doing there (its `what`, e.g. "training"); `flag` is the one to give another folder
  with (e.g. "--model_dir"). The hold is FOLDER/LOCK_FILE, which says who holds it and
  is removed on release.
  """
  key = os.path.realpath(folder)
  if key in _held:
    _held[key] += 1
    try:
      yield
    finally:
      _held[key] -= 1
    return
  path = os.path.join(folder, LOCK_FILE)
  while True:
    try:
      os.makedirs(folder, exist_ok=True)  # (again: a run that failed may remove it)
      fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except FileNotFoundError:
      continue
    except OSError as e:
      raise write_error(e, path) from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 1024, 0).decode("utf-8", "replace").strip() or "another process"
      os.close(fd)
      raise UserError(f"{folder}: another run is writing in it ({holder}): wait for it to "
                      f"end, or give another {flag}") from None
    except OSError as e:
      os.close(fd)
      if e.errno not in _NO_LOCKS:
        raise
      _unlocked(path, e)
      yield
      return
    try:  # (the holder before removed it on release: lock the file there now)
      if os.stat(path).st_ino == os.fstat(fd).st_ino:
        break
    except FileNotFoundError:
      pass
    os.close(fd)
  _held[key] = 1
  try:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{what}, {_holder()}\n".encode(), 0)
    yield
  finally:
    del _held[key]
    with contextlib.suppress(OSError):
      os.remove(path)  # (while locked: a process waiting on it then tries the path again)
    os.close(fd)


@contextlib.contextmanager
def replacing_in(folder: str) -> Iterator[None]:
  """Waits until no other process is replacing files in `folder` (in this module's
  sense), and holds it while the body runs: for a check of a file and the write that
  relies on it (the detections and scores a model dir holds). Hold it briefly. The lock
  is on the folder itself: no file is made."""
  try:
    os.makedirs(folder, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
  except OSError:  # (the write that follows names the problem)
    yield
    return
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as e:
      if e.errno not in _NO_LOCKS:
        raise
      _unlocked(folder, e)
    yield
  finally:
    os.close(fd)


def fingerprint(path: str):
  """What changes when `path` is replaced or written (a run that read it can tell it is
  no longer what it read); None when it is not there."""
  try:
    st = os.stat(path)
  except OSError:
    return None
  return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns
