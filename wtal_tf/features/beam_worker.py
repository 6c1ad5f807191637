"""Beam's SDK worker for the DirectRunner's multi_processing mode, started quietly.

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
of the driver, which print the same traceback to the driver's stderr: see
`beam_options.drop_harness_prints`. (This module does not import Beam's worker
modules itself: imported before main() sets up logging, they would bring back
"Logging handler created.")
"""

import logging
import os
import runpy
import sys

from wtal_tf import startup

SDK_WORKER_MODULE = "apache_beam.runners.worker.sdk_worker_main"
SHOWN_LEVEL = logging.WARNING  # the quiet worker's stderr shows records from this level


def command(executable: str = sys.executable) -> list[str]:
  """The worker's command line, as the driver starts it (verbosity carried over)."""
  return [executable, "-m", __name__] + ([] if startup.is_quiet()
                                         else [f"--verbosity={startup.SHOW_VERBOSITY}"])


def main() -> None:
  if startup.is_quiet():
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(SHOWN_LEVEL)
    logging.getLogger().addHandler(handler)
    sys.stderr = open(os.devnull, "w", encoding="utf-8")  # pylint: disable=consider-using-with
  sys.argv = sys.argv[:1]  # the verbosity flag was for wtal_tf's start-up only
  runpy.run_module(SDK_WORKER_MODULE, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
  main()
