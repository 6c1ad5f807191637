"""Runs at once on the same folder: one writer of a model dir, one replacer of a file.

Both are advisory locks (flock) that go with the process however it ends (a SIGKILL
too): nothing stale is left to clear by hand. They keep apart the processes of one
machine, and of several where the filesystem shares flock locks (local disks, NFS v4);
a mount whose locks are local to each machine (e.g. NFS with local_lock=flock) keeps
apart only each machine's own. Where the filesystem refuses locks, the work runs
unlocked after a warning.
"""

import contextlib
import datetime
import fcntl
import os
import socket
from typing import Iterator

from absl import logging

from wtal_tf.errors import UserError, write_error

LOCK_FILE = ".wtal_tf.lock"  # in a folder one process writes at a time: who holds it
HOLDER_MAX_BYTES = 1024  # of LOCK_FILE read for the message refusing a second writer
OPEN_ATTEMPTS = 100  # opens of LOCK_FILE, each removed by a holder releasing it meanwhile
_held: dict[str, int] = {}  # {folder (real path): depth} this process holds (sole_writer)
_replacing: dict[str, int] = {}  # ... and replaces files in (replacing_in)
_warned: set[str] = set()  # paths whose lock the filesystem refused (warned once)


def _unlocked(path: str, e: OSError, consequence: str) -> None:
  if path not in _warned:
    _warned.add(path)
    logging.warning("%s: cannot lock (%s): %s", path, e.strerror or e, consequence)


def _holder() -> str:
  since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
  return f"pid {os.getpid()} on {socket.gethostname()}, since {since}"


@contextlib.contextmanager
def _counted(held: dict[str, int], key: str) -> Iterator[None]:
  """Counts `key` in `held` while the body runs (a hold taken again inside is a no-op)."""
  held[key] = held.get(key, 0) + 1
  try:
    yield
  finally:
    held[key] -= 1
    if not held[key]:
      del held[key]


@contextlib.contextmanager
def sole_writer(folder: str, what: str, flag: str) -> Iterator[None]:
  """Holds `folder` (made if needed) for this process while the body runs (again inside:
  no-op).

  Another process holding it is a UserError naming `folder` and what that process is
  doing there (its `what`, e.g. "training"); `flag` is the one to give another folder
  with (e.g. "--model_dir"). The hold is FOLDER/LOCK_FILE, which says who holds it and
  is removed on release.
  """
  key = os.path.realpath(folder)
  if key in _held:
    with _counted(_held, key):
      yield
    return
  path = os.path.join(folder, LOCK_FILE)
  for _ in range(OPEN_ATTEMPTS):
    existed = os.path.exists(path)
    try:
      os.makedirs(folder, exist_ok=True)  # (again: a run that failed on its data may have
      # removed the folder it made)
    except OSError as e:
      raise write_error(e, path) from None
    try:
      fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except FileNotFoundError:
      continue
    except OSError as e:
      raise write_error(e, path) from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = (os.pread(fd, HOLDER_MAX_BYTES, 0).decode("utf-8", "replace").strip()
                or "another process")
      os.close(fd)
      raise UserError(f"{folder}: another run is writing in it ({holder}): wait for it to "
                      f"end, or give another {flag}") from None
    except OSError as e:  # (a filesystem without locks)
      os.close(fd)
      if not existed:
        with contextlib.suppress(OSError):
          os.remove(path)
      _unlocked(path, e, f"a second run {what} there is not refused")
      with _counted(_held, key):
        yield
      return
    try:  # (the holder before removed it on release: lock the file there now)
      if os.stat(path).st_ino == os.fstat(fd).st_ino:
        break
    except FileNotFoundError:
      pass
    os.close(fd)
  else:
    raise UserError(f"{path}: removed each time it was opened ({OPEN_ATTEMPTS} times, by "
                    "runs ending there): try again")
  try:
    with contextlib.suppress(OSError):  # (who holds it, for a second run's message; a
      # full disk leaves it unsaid)
      os.ftruncate(fd, 0)
      os.pwrite(fd, f"{what}, {_holder()}\n".encode(), 0)
    with _counted(_held, key):
      yield
  finally:
    with contextlib.suppress(OSError):
      os.remove(path)  # (while locked: a process that opened it tries the path again)
    os.close(fd)


@contextlib.contextmanager
def replacing_in(folder: str) -> Iterator[None]:
  """Waits until no other process is replacing files in `folder` (in this module's
  sense), and holds it while the body runs (again inside: no-op): for a check of a file
  and the write that relies on it (the detections and scores a model dir holds). Hold
  it briefly. The lock is on the folder itself: no file is made."""
  key = os.path.realpath(folder)
  if key in _replacing:
    with _counted(_replacing, key):
      yield
    return
  try:
    os.makedirs(folder, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
  except OSError:  # (the write that follows names the problem)
    yield
    return
  try:
    try:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        logging.warning("%s: waiting for another run replacing files there", folder)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as e:  # (a filesystem without locks on folders, e.g. NFS)
      _unlocked(folder, e, "two runs replacing the same file there at once are not kept "
                "apart")
    with _counted(_replacing, key):
      yield
  finally:
    os.close(fd)
