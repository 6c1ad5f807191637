"""The one exception type for problems with the user's input."""


class UserError(Exception):
  """Bad input from the user (files, flags, data).

  Entrypoints print the message on one line and exit non-zero, without a
  traceback. Messages name the file (or flag) and the problem.
  """
