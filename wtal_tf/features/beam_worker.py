"""Beam's SDK workers of the DirectRunner, quiet: its worker processes
(multi_processing mode) started quietly, and its worker threads' prints dropped.

Beam starts each such worker as `python -m apache_beam.runners.worker.sdk_worker_main`.
Importing that module logs Beam's "apitools not found" warning on the root
logger, and a root logger without handlers makes `logging` install a stderr
handler for it, which then also prints the harness's INFO "Logging handler
created.": two lines per worker before any wtal_tf code runs. Started as
`python -m wtal_tf.features.beam_worker` instead (`beam_options.direct_runner`
does this), the package's quiet start-up runs first (see wtal_tf/startup.py:
its root-logger filter drops Beam's import warnings), and a stderr handler at
WARNING is in place, so those two lines are gone while the worker's warnings and
errors still reach stderr. Beam's worker also prints the traceback of every
failed bundle to sys.stderr, and the driver receives that same traceback as the
run's failure (one line for a user error): the quiet worker's sys.stderr is a
sink, while its log handler keeps writing to the real stderr. With
--verbosity >= 1 (the driver then adds it to this command) nothing is changed
and Beam's worker runs as Beam starts it.

The default multi_threading mode runs Beam's worker (its SdkHarness) in threads
of the driver, which print the same traceback to the driver's sys.stderr:
`harness_prints_dropped` drops what the harness module itself writes there while
the pipeline runs, and passes every other write (log lines from any thread), unless
the driver was started with --verbosity >= 1.
"""

import contextlib
import logging
import os
import runpy
import sys

from wtal_tf import startup

SDK_WORKER_MODULE = "apache_beam.runners.worker.sdk_worker_main"
SDK_HARNESS_MODULE = "apache_beam.runners.worker.sdk_worker"  # prints failed bundles' tracebacks
SHOWN_LEVEL = logging.WARNING  # the quiet worker's stderr shows records from this level


def command(executable: str = sys.executable) -> list[str]:
  """The worker's command line, as the driver starts it (verbosity carried over)."""
  shown = os.environ.get(startup.QUIET_ENV) != "1"
  return [executable, "-m", __name__] + ([f"--verbosity={startup.SHOW_VERBOSITY}"]
                                         if shown else [])


class _WithoutHarnessPrints:
  """A text stream that passes writes to `stream`, except those made by SDK_HARNESS_MODULE."""

  def __init__(self, stream):
    self._stream = stream

  def write(self, text: str) -> int:
    caller = sys._getframe(1)  # pylint: disable=protected-access
    if caller.f_globals.get("__name__") == SDK_HARNESS_MODULE:  # (print() calls write
      return len(text)  # from its caller's frame)
    return self._stream.write(text)

  def __getattr__(self, name):
    return getattr(self._stream, name)


@contextlib.contextmanager
def harness_prints_dropped():
  """While open, in a quiet driver (started without --verbosity): what Beam's in-process
  SDK harness prints to sys.stderr is dropped."""
  if os.environ.get(startup.QUIET_ENV) != "1":
    yield
    return
  saved = sys.stderr
  sys.stderr = _WithoutHarnessPrints(saved)
  try:
    yield
  finally:
    sys.stderr = saved


def main() -> None:
  if os.environ.get(startup.QUIET_ENV) == "1":
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(SHOWN_LEVEL)
    logging.getLogger().addHandler(handler)
    sys.stderr = open(os.devnull, "w", encoding="utf-8")  # pylint: disable=consider-using-with
  sys.argv = sys.argv[:1]  # the verbosity flag was for wtal_tf's start-up only
  runpy.run_module(SDK_WORKER_MODULE, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
  main()
