"""The one exception type for problems with the user's input, and its messages' helpers."""

import contextlib
import os
import re
import shlex


class UserError(Exception):
  """Bad input from the user (files, flags, data).

  Entrypoints print the message on one line and exit non-zero, without a
  traceback. Messages name the file (or flag) and the problem.
  """


class WriteError(UserError, OSError):
  """A file that could not be written (a full or read-only disk): a UserError naming it,
  and still the OSError it was (errno, strerror), for code that handles those.
  Made as WriteError(errno, strerror, path)."""

  def __str__(self):
    return f"{self.filename}: cannot write ({self.strerror})"


def write_error(e: OSError, path: str) -> WriteError:
  """`e`, an OSError met writing `path`, as a WriteError naming `path` (one already is)."""
  return e if isinstance(e, WriteError) else WriteError(e.errno, e.strerror or str(e),
                                                        os.fspath(path))


def op_reason(message: str) -> str:
  """The reason a TensorFlow op error's message gives, for a one-line message: its first
  line, without the function node, the files before the last "; " and the "[Op:...]"."""
  line = (message.strip().splitlines() or [""])[0]
  line = re.sub(r"\s*\[Op:\w+\]$", "", re.sub(r"^\{\{[^}]*\}\}\s*", "", line))
  return line.rsplit("; ", 1)[-1]


MAX_ARGS_SHOWN = 3  # arguments quoted by unexpected_arguments
MAX_QUOTED_CHARS = 40  # characters of a value quoted in a message (shorten)


def shorten(text: str, max_chars: int = MAX_QUOTED_CHARS) -> str:
  """`text`, cut to `max_chars` with an ellipsis when longer (a value quoted in a message)."""
  return text if len(text) <= max_chars else text[:max_chars - 1] + "…"


def first_few(items, limit: int, sep: str = ", ") -> str:
  """The first `limit` of `items` joined by `sep` for a message, and how many more there are."""
  more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
  return sep.join(items[:limit]) + more


def unexpected_arguments(args) -> UserError:
  """The error of arguments that are not flags (e.g. the lines of a file given as a
  --flagfile), quoting the first few as a shell would, each shortened."""
  shown = [shlex.quote(shorten(a)) for a in args[:MAX_ARGS_SHOWN]]
  more = f" and {len(args) - MAX_ARGS_SHOWN} more" if len(args) > MAX_ARGS_SHOWN else ""
  return UserError(f"unexpected arguments {' '.join(shown)}{more} (flags are --name=value, "
                   "also in a --flagfile)")


@contextlib.contextmanager
def reading(path: str):
  """Runs the block that reads text file `path`, with a file that cannot be read (no
  permission, a folder) or is not UTF-8 text as one UserError naming it."""
  try:
    yield
  except UnicodeDecodeError as e:
    raise not_text(path, e) from None
  except OSError as e:
    raise UserError(f"{path}: cannot read ({e.strerror or e})") from None


def not_text(path: str, e: UnicodeDecodeError) -> UserError:
  """The error of a file read as UTF-8 text that is not."""
  return UserError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})")
