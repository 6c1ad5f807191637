"""Ctrl-C in a command: one line, `error: interrupted`, exit status 130.

In `python -m wtal_tf.<verb>` (wtal_tf.startup installs this before the command's
imports) a Ctrl-C ends the process at once while it is still loading (before
cli.run starts the command: nothing is written then); once the command runs it is a
KeyboardInterrupt, which cli.run reports (interrupted()); and if the process has not
ended INTERRUPT_GRACE_S after that (the exception was raised inside a callback that
ignores it, e.g. a garbage collector's), or on a second Ctrl-C, it ends at once. The
processes a command starts with `python -m` for its own work (NOT_COMMANDS: Beam's
worker processes, the weights installer) keep Python's own handling: their parent
reports the interrupt, and they clean up as they unwind.
"""

import os
import signal
import sys
import threading
from typing import Callable, Sequence

INTERRUPTED_STATUS = 130  # exit status after Ctrl-C: 128 + SIGINT, as shells report it
INTERRUPT_GRACE_S = 5.0  # seconds a Ctrl-C's KeyboardInterrupt has to end the process
NOT_COMMANDS = ("wtal_tf.features.beam_worker", "wtal_tf.features.install_weights")
_running = threading.Event()  # set by cli.run: a KeyboardInterrupt is reported there
_interrupts = []  # the Ctrl-Cs received
_cleanups = []  # what interrupted() calls first (at_interrupt)
_stderr = [2]  # the file descriptor of the process's stderr (fd 2 is a temporary file
# while TensorFlow is imported quietly)


def at_interrupt(cleanup: Callable[[], None]) -> None:
  """Has interrupted() call `cleanup` before it ends the process: what the interpreter's
  shutdown, which it skips, would do (e.g. remove a temporary folder)."""
  _cleanups.append(cleanup)


def interrupted() -> None:
  """Ends the process: `error: interrupted` on stderr, exit status 130. Without the
  interpreter's shutdown, which with worker threads still running (Beam's, TensorFlow's)
  can abort in C++ ("terminate called ..."); every file is written whole (a temporary
  file renamed), so nothing is lost and a rerun resumes. The at_interrupt cleanups run
  first."""
  for cleanup in _cleanups:
    try:
      cleanup()
    except Exception:  # pylint: disable=broad-exception-caught
      pass  # (the process ends anyway)
  try:
    sys.stdout.flush()  # (what the command printed comes before the line)
  except Exception:  # pylint: disable=broad-exception-caught
    pass  # (a closed pipe, or a write under way in the thread this interrupts)
  os.write(_stderr[0], b"error: interrupted\n")
  os._exit(INTERRUPTED_STATUS)  # pylint: disable=protected-access


def _on_interrupt(signum, frame):
  del signum, frame
  _interrupts.append(1)
  if not _running.is_set() or len(_interrupts) > 1:
    interrupted()
  timer = threading.Timer(INTERRUPT_GRACE_S, interrupted)
  timer.daemon = True
  timer.start()
  raise KeyboardInterrupt


def running() -> None:
  """Called by cli.run once the command starts: a Ctrl-C is a KeyboardInterrupt now."""
  _running.set()


def command_module(orig_argv: Sequence[str]) -> str:
  """The module a `python -m <module>` process runs ("" otherwise)."""
  args = list(orig_argv)
  return args[args.index("-m") + 1] if "-m" in args[:-1] else ""


def install(orig_argv: Sequence[str]) -> bool:
  """Handles Ctrl-C as the module docstring says, in the main thread of a command's
  process (not NOT_COMMANDS'); returns whether it did."""
  if (command_module(orig_argv) in NOT_COMMANDS
      or threading.current_thread() is not threading.main_thread()):
    return False
  try:
    _stderr[0] = os.dup(2)
  except OSError:
    pass  # no stderr: the line goes nowhere
  signal.signal(signal.SIGINT, _on_interrupt)
  return True
