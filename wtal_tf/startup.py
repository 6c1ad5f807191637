"""Quiet start-up: TensorFlow's and Beam's loading messages, off unless --verbosity asks.

Loading TensorFlow and Beam prints ~20 lines to stderr: oneDNN and CPU-feature
notices, "Could not find cuda drivers", "E... failed call to cuInit" on a
machine without a GPU, Beam's "apitools not found". TensorFlow's C++ logging
reads TF_CPP_MIN_LOG_LEVEL once, when TensorFlow is imported, and the lines
its libraries write while they load come before that logging is initialised
and ignore the variable; Beam's warning is logged while apache_beam is
imported. So this must act before those imports, long before absl parses the
flags; it runs when the package `wtal_tf` is imported (`wtal_tf/__init__.py`),
which Python does before any module of it, so every entrypoint is covered
whatever its own imports are. It acts in two kinds of process only:
  * `python -m wtal_tf.<verb>` (while Python locates the module, sys.argv[0]
    is "-m"), unless its arguments give absl's --verbosity (-v) >= 1;
  * a process started by such a one that imports wtal_tf (a Beam worker):
    told so by WTAL_QUIET_STARTUP=1 in its environment.
Importing wtal_tf elsewhere (tests, notebooks, your own scripts) changes nothing.

What it does: TF_CPP_MIN_LOG_LEVEL=3 unless already set (kept for child
processes too); the first import of tensorflow runs with file descriptor 2
sent to a temporary file, written back if that import fails; warnings Beam's
modules log on the root logger are dropped, and so are the INFO lines
TensorFlow's Python modules log on absl's logger (wtal_tf's own stay). A
--verbosity in a flagfile is not seen here (only the command line).
Ctrl-C in such a command is wtal_tf.interrupts' (installed here, before the imports).
"""

import importlib.abc
import importlib.util
import logging
import os
import sys
import tempfile
from typing import Iterable

from wtal_tf import interrupts

SHOW_VERBOSITY = 1  # absl --verbosity from which start-up messages are shown
QUIET_ENV = "WTAL_QUIET_STARTUP"
TF_LOG_ENV = "TF_CPP_MIN_LOG_LEVEL"


def verbosity(argv: Iterable[str]) -> int:
  """absl's --verbosity/-v as given in argv (without the program name), else 0."""
  level, args = 0, list(argv)
  for i, arg in enumerate(args):
    if arg == "--":
      break
    name, eq, value = arg.lstrip("-").partition("=")
    if not arg.startswith("-") or name not in ("verbosity", "v"):
      continue
    if not eq:
      value = args[i + 1] if i + 1 < len(args) else ""
    try:
      level = int(value)
    except ValueError:
      pass  # absl reports it when it parses the flags
  return level


class _LibraryLogs(logging.Filter):
  """Drops the records one library's modules log on the logger it is added to, below a
  level."""

  def __init__(self, package: str, below: int):
    super().__init__()
    self.package, self.below = package, below

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.levelno < self.below
                and f"{os.sep}{self.package}{os.sep}" in record.pathname)


def _drop_library_logs(target: logging.Logger, package: str, below: int) -> None:
  """Records `package`'s modules log on `target` below `below` are dropped (one filter
  per logger and package; a later call only raises its level)."""
  found = next((f for f in target.filters
                if isinstance(f, _LibraryLogs) and f.package == package), None)
  if found is None:
    target.addFilter(_LibraryLogs(package, below))
  else:
    found.below = max(found.below, below)


def drop_beam_root_logs(below: int) -> None:
  """Records Beam's modules log on the root logger below `below` are dropped: their
  warnings at import, and in extract's driver the tracebacks it reports as one line
  (features.beam_options)."""
  _drop_library_logs(logging.getLogger(), "apache_beam", below)


class _QuietImport(importlib.abc.MetaPathFinder):
  """Runs the first import of one top-level package with stderr's file descriptor
  (where C++ libraries write) sent to a temporary file, written back if it fails."""

  def __init__(self, package: str):
    self.package = package

  def find_spec(self, fullname, path=None, target=None):
    if fullname != self.package:
      return None
    sys.meta_path.remove(self)  # once; the real spec from the other finders
    spec = importlib.util.find_spec(fullname)
    if spec is not None and spec.loader is not None:
      spec.loader.exec_module = _with_stderr_captured(spec.loader.exec_module)
    return spec


def _with_stderr_captured(exec_module):
  def quiet_exec_module(module):
    sys.stderr.flush()
    try:
      saved = os.dup(2)
    except OSError:  # no stderr to quieten
      return exec_module(module)
    try:
      with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
          return exec_module(module)
        except BaseException:
          sys.stderr.flush()
          os.dup2(saved, 2)
          captured.seek(0)
          os.write(2, captured.read())
          raise
        finally:
          sys.stderr.flush()
          os.dup2(saved, 2)
    finally:
      os.close(saved)
  return quiet_exec_module


def quiet() -> None:
  """Silences the start-up messages of this process and of the processes it starts."""
  os.environ[QUIET_ENV] = "1"
  os.environ.setdefault(TF_LOG_ENV, "3")
  # TensorFlow's Python INFO lines on absl's logger (wtal_tf's own progress lines stay),
  # e.g. one per checkpoint saved: "Sharding callback duration: 26 microseconds". Imported
  # here: absl's logging defines its flags (--verbosity, ...) on absl's global FLAGS.
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  _drop_library_logs(absl_logging.get_absl_logger(), "tensorflow", logging.WARNING)
  drop_beam_root_logs(logging.ERROR)  # Beam's warnings at import
  if "tensorflow" not in sys.modules and not any(
      isinstance(f, _QuietImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _QuietImport("tensorflow"))


def is_quiet() -> bool:
  """Whether this process was told to be quiet (quiet() ran here or in its parent)."""
  return os.environ.get(QUIET_ENV) == "1"


def on_package_import(argv=None, environ=None, orig_argv=None) -> bool:
  """What `import wtal_tf` does: quiet() in the processes the module docstring names,
  and interrupts.install() in a command's; returns whether it was quiet."""
  argv = sys.argv if argv is None else argv
  environ = os.environ if environ is None else environ
  if argv[:1] == ["-m"]:  # python -m wtal_tf.<verb>, being located
    interrupts.install(orig_argv if orig_argv is not None else sys.orig_argv)
    wanted = verbosity(argv[1:]) < SHOW_VERBOSITY
    if not wanted:
      environ.pop(QUIET_ENV, None)  # nor in the processes it starts
  else:
    wanted = environ.get(QUIET_ENV) == "1"
  if wanted:
    quiet()
  return wanted
