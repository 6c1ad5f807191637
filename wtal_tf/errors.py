"""The one exception type for problems with the user's input, and its messages' helpers."""

import shlex


class UserError(Exception):
  """Bad input from the user (files, flags, data).

  Entrypoints print the message on one line and exit non-zero, without a
  traceback. Messages name the file (or flag) and the problem.
  """


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
