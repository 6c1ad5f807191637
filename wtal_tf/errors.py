"""The one exception type for problems with the user's input."""


class UserError(Exception):
  """Bad input from the user (files, flags, data).

  Entrypoints print the message on one line and exit non-zero, without a
  traceback. Messages name the file (or flag) and the problem.
  """


MAX_ARGS_SHOWN, MAX_ARG_CHARS = 3, 40  # of the arguments quoted by unexpected_arguments


def unexpected_arguments(args) -> UserError:
  """The error of arguments that are not flags (e.g. the lines of a file given as a
  --flagfile), quoting the first few, each shortened."""
  shown = [a if len(a) <= MAX_ARG_CHARS else a[:MAX_ARG_CHARS - 1] + "…"
           for a in args[:MAX_ARGS_SHOWN]]
  more = f" and {len(args) - MAX_ARGS_SHOWN} more" if len(args) > MAX_ARGS_SHOWN else ""
  return UserError(f"unexpected arguments {' '.join(shown)}{more} (flags are --name=value, "
                   "also in a --flagfile)")
