"""Flags generated from the config fields, and their conversion back to a frozen Config.

Each field of a config group (wtal_tf/config.py) is one flag of the same name,
with the field's default, help text, bounds and choices. Entrypoints define
the groups they take (`define_flags`) plus any flag only they need, under
`if __name__ == "__main__"`, then call `config_from_flags()`, and run under
`run()`: a user error or a bad flag is one line `error: ...`, exit status 2.
Nothing here runs at import time (the quiet start-up is wtal_tf.startup's).
"""

import dataclasses
import os
import re
import sys
import typing
from typing import Callable, Iterable, Iterator, Optional

from absl import app
from absl import flags

from wtal_tf import config as cfg_lib
from wtal_tf import interrupts
from wtal_tf.errors import UserError, not_text, unexpected_arguments

FLAGS = flags.FLAGS
CONFIG_MODULE = cfg_lib.__name__  # absl's record of where the config fields' flags come
# from, which tells them from a tool's own flag of the same name (evaluate's --output)
ERROR_STATUS = 2  # exit status after a user error or a bad flag
MAX_FLAGFILE_DEPTH = 10  # flagfiles naming flagfiles: how deep an error's source is sought


def _kind(field: dataclasses.Field) -> tuple[type, Optional[type]]:
  """(the field's type, its item type for a tuple field) with Optional[...] unwrapped."""
  tp = field.type
  if typing.get_origin(tp) is typing.Union:
    tp = next(a for a in typing.get_args(tp) if a is not type(None))
  if typing.get_origin(tp) is tuple:
    return tuple, typing.get_args(tp)[0]
  return tp, None


def _define_field(field: dataclasses.Field, fv: flags.FlagValues) -> None:
  meta, name, default = field.metadata, field.name, field.default
  help_text, choices = meta["help"], meta["choices"]
  where = {"flag_values": fv, "module_name": CONFIG_MODULE}
  bounds = {"lower_bound": meta["lower"], "upper_bound": meta["upper"], **where}
  kind, item = _kind(field)
  if kind is tuple:
    values = [f"{v:g}" if item is float else v for v in default]
    if choices:
      help_text = f"{help_text} Choices: {','.join(choices)}."
    flags.DEFINE_list(name, values, help_text, **where)
    if choices:
      flags.register_validator(
          name, lambda v: bool(v) and set(v) <= set(choices), flag_values=fv,
          message=f"--{name}: items must be from {','.join(choices)} (at least one)")
  elif kind is bool:
    flags.DEFINE_boolean(name, default, help_text, **where)
  elif kind is int:
    flags.DEFINE_integer(name, default, help_text, **bounds)
  elif kind is float:
    flags.DEFINE_float(name, default, help_text, **bounds)
  elif choices:
    flags.DEFINE_enum(name, default, list(choices), help_text, **where)
  else:
    flags.DEFINE_string(name, default, help_text, **where)


def flag_fields(groups: Iterable[str], fields: Optional[Iterable[str]] = None
                ) -> dict[str, dataclasses.Field]:
  """{flag name: field} of the groups' flag fields (a name shared by two groups once),
  all of them or those named in `fields`."""
  out = {}
  for group in groups:
    for field in dataclasses.fields(cfg_lib.GROUPS[group]):
      if field.metadata.get("flag", True) and (fields is None or field.name in fields):
        out.setdefault(field.name, field)
  return out


def config_flags(fv: flags.FlagValues = FLAGS) -> set[str]:
  """The names of the flags in `fv` defined from config fields (not a tool's own)."""
  return {f.name for f in fv.flags_by_module_dict().get(CONFIG_MODULE, ())}


def define_flags(groups: Iterable[str] = cfg_lib.EXPERIMENT_GROUPS,
                 fields: Optional[Iterable[str]] = None,
                 fv: flags.FlagValues = FLAGS) -> None:
  """Defines the flags of the config groups, or of their `fields` (idempotent per flag)."""
  for name, field in flag_fields(groups, fields).items():
    if name not in fv:
      _define_field(field, fv)


def define_seeds_flag(fv: flags.FlagValues = FLAGS) -> None:
  """--seeds of the experiment entrypoints (ablation, mv)."""
  flags.DEFINE_integer("seeds", 1, "Seeds per row.", lower_bound=1, flag_values=fv)


def define_per_class_flag(fv: flags.FlagValues = FLAGS) -> None:
  """--per_class of the entrypoints that print an mAP table (evaluate, train_eval)."""
  flags.DEFINE_boolean("per_class", False, "Also print per-class AP.", flag_values=fv)


def define_detections_output_flag(fv: flags.FlagValues = FLAGS) -> None:
  """--output of the entrypoints that write detections (localize, train_eval)."""
  flags.DEFINE_string("output", "", "Detections JSON (default "
                      "MODEL_DIR/detections_<test_subset>.json).", flag_values=fv)


def _value(field: dataclasses.Field, value):
  kind, item = _kind(field)
  if kind is not tuple:
    return value
  if item is float:
    try:
      return tuple(float(v) for v in value)
    except ValueError:
      raise UserError(f"--{field.name}: expected numbers, got {value}") from None
  if field.metadata["choices"]:
    return tuple(dict.fromkeys(value))  # each choice once, in the order given
  return tuple(value)


def _flag_value(field: dataclasses.Field, value):
  """The flag value of a field's `value`: the inverse of _value (a float item as repr
  writes it, which reads back as the same float)."""
  kind, item = _kind(field)
  if kind is not tuple:
    return value
  return [repr(v) for v in value] if item is float else list(value)


def config_from_flags(pipeline_args: tuple[str, ...] = (),
                      fv: flags.FlagValues = FLAGS) -> cfg_lib.Config:
  """Parsed flags -> frozen Config; a group's undefined flags keep their defaults.

  pipeline_args: extract's pass-through Beam options.
  """
  groups, defined = {}, config_flags(fv)
  try:
    for group, cls in cfg_lib.GROUPS.items():
      kwargs = {name: _value(f, fv[name].value)
                for name, f in flag_fields((group,)).items() if name in defined}
      if group == "extract":
        kwargs["pipeline_args"] = tuple(pipeline_args)
      groups[group] = cls(**kwargs)
  except ValueError as e:
    raise UserError(str(e)) from None
  return cfg_lib.Config(**groups)


def flags_markdown(fv: flags.FlagValues, names: Optional[Iterable[str]] = None) -> str:
  """A flag table (name, default, help) of the flags defined in `fv` (or those of them
  in `names`), in definition order."""
  lines = ["| flag | default | meaning |", "|---|---|---|"]
  for name in (list(fv) if names is None else [n for n in fv if n in set(names)]):
    flag = fv[name]
    default = flag.default
    if isinstance(default, list):
      default = ",".join(default if len(default) <= 5 else [*default[:2], "…", default[-1]])
    help_text = flag.help
    if isinstance(flag, flags.EnumFlag):  # absl prefixes "<a|b|c>: "
      choices, help_text = help_text[1:].split(">: ", 1)
      help_text = f"`{choices}`: {help_text}"
    # Paths with <placeholders> go in code spans so Markdown keeps the brackets.
    words = []
    for word in help_text.split(" "):
      core = word.rstrip(".,;)")
      words.append(f"`{core}`{word[len(core):]}" if "<" in core and "`" not in core else word)
    cells = [f"`--{name}`", "" if default in (None, "") else f"`{default}`",
             " ".join(words).replace("|", "\\|")]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def experiment_flags(fv: flags.FlagValues = FLAGS) -> str:
  """The experiment flags (what shapes the model, its training and its localization;
  no tool flags) as a flagfile: what training records as MODEL_DIR/flags.cfg."""
  defined = config_flags(fv)
  fields = flag_fields(cfg_lib.EXPERIMENT_GROUPS)
  lines = [_recorded(fv[n], fields[n]) for n in fields if n in defined and fv[n].value is not None]
  return "\n".join(line for line in lines if line) + "\n"


def _recorded(flag: flags.Flag, field: dataclasses.Field) -> str:
  """The flag as experiment_flags records it: a path field's paths absolute, so the
  record reads the same from any working folder."""
  if not field.metadata["path"]:
    return flag.serialize()
  value = flag.value
  absolute = ([os.path.abspath(v) for v in value] if isinstance(value, list)
              else os.path.abspath(value) if value else value)
  return f"--{flag.name}={flag.serializer.serialize(absolute)}"


def config_flagfile(cfg: cfg_lib.Config) -> str:
  """The experiment fields of `cfg` as a flagfile, in experiment_flags' form: what
  MODEL_DIR/flags.cfg records of a run whose config code changed after reading the
  flags (an ablation row). Read back as a flagfile, it gives cfg's experiment groups
  again (but for spaces at either end of a value, which absl strips)."""
  fv = flags.FlagValues()
  define_flags(fv=fv)
  for group in cfg_lib.EXPERIMENT_GROUPS:
    for name, field in flag_fields((group,)).items():
      fv[name].value = _flag_value(field, getattr(getattr(cfg, group), name))
  return experiment_flags(fv)


def fail(message: str, status: int = ERROR_STATUS) -> typing.NoReturn:
  """Prints `error: <message>` as one line on stderr and exits with `status`."""
  print(f"error: {message}", file=sys.stderr)
  sys.exit(status)


HELP_FLAGS = ("help", "h", "?", "helpfull", "helpshort", "helpxml")  # absl's, with - or --


def parse_flags(argv: list[str], known_only: bool = False,
                fv: flags.FlagValues = FLAGS) -> list[str]:
  """fv(argv), with a bad flag (unknown, unparsable value, out of bounds, failed
  validator) as one `error:` line and exit status 2 instead of absl's
  multi-line report or a traceback."""
  try:
    return fv(argv, known_only=known_only)
  except flags.Error as e:
    message = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
    message = message.removeprefix("ERROR::").strip()  # absl's prefix of a flagfile's errors
    # A flag set by one flagfile only: the error names it (set in several places, the
    # message's value tells which).
    named = re.match(r"flag --(\w+)=", message)  # a bad value: "flag --name=value: ..."
    name = getattr(e, "flagname", None) or (named and named[1])
    sources = _setting_sources(name, argv[1:]) if name else set()
    fail(f"{sources.pop()}: {message}" if len(sources) == 1 and "" not in sources
         else message)
  except UnicodeDecodeError as e:  # absl reads flagfiles as UTF-8
    where = next((path for path, arg in _walk(argv[1:]) if arg is None), "a --flagfile")
    fail(str(not_text(where, e)))
  except SystemExit as e:  # absl's --help and its kin print, then exit 1: asked-for help
    if e.code == 1 and any(a.startswith("-") and a.lstrip("-").split("=")[0] in HELP_FLAGS
                           for a in argv[1:]):
      sys.exit(0)  # is no failure (`extract --help && ...`)
    raise


def _flagfile_lines(path: str) -> Optional[list[str]]:
  """The flag lines of a flagfile as absl reads them (no comments, no blank lines); []
  when it cannot be opened (absl says so), None when it is not UTF-8 text."""
  try:
    with open(path, encoding="utf-8") as f:
      lines = [line.strip() for line in f]
  except OSError:
    return []
  except UnicodeDecodeError:
    return None
  return [line for line in lines if line and not line.startswith(("#", "//"))]


def _walk(args: list[str], source: str = "", depth: int = 0
          ) -> Iterator[tuple[str, Optional[str]]]:
  """(where, argument) of each argument absl reads from `args`, which come from `source`
  ("" for the command line), following flagfiles as absl does; (path, None) for a
  flagfile that is not UTF-8 text."""
  if depth > MAX_FLAGFILE_DEPTH:
    return
  pending = False
  for arg in args:
    path = None
    if pending:  # --flagfile PATH
      path, pending = arg, False
    elif arg in ("--flagfile", "-flagfile"):
      pending = True
    elif arg.startswith(("--flagfile=", "-flagfile=")):
      path = arg.split("=", 1)[1]
    else:
      yield source, arg
    if path:
      path = os.path.expanduser(path)
      lines = _flagfile_lines(path)
      if lines is None:
        yield path, None
      else:
        yield from _walk(lines, path, depth + 1)


def _setting_sources(name: str, args: list[str]) -> set[str]:
  """Where flag `name` is set in `args` (flagfiles followed): "" for the command line."""
  spellings = (f"--{name}", f"-{name}", f"--no{name}", f"-no{name}")
  return {where for where, arg in _walk(args) if arg and arg.split("=", 1)[0] in spellings}


def run(main: Callable[[list[str]], None], pass_unknown: bool = False) -> None:
  """absl.app.run with bad flags and user errors printed on one line, exit status 2.

  pass_unknown: arguments that are not wtal_tf flags reach main's argv[1:]
  unchanged (extract hands them to Beam) instead of being an error.
  """
  def wrapped(argv):
    if len(argv) > 1 and not pass_unknown:
      fail(str(unexpected_arguments(argv[1:])))
    interrupts.running()  # (a Ctrl-C before this ends the process at once: nothing written)
    try:
      main(argv)
    except UserError as e:
      fail(str(e))
    except KeyboardInterrupt:  # Ctrl-C: files are written whole, so a rerun resumes
      interrupts.interrupted()

  # --help lists every flag wtal_tf defined for this command: the config fields' and those
  # defined by helpers here or by an entrypoint run under another name (wtal_tf.pipeline).
  for module, defined in FLAGS.flags_by_module_dict().items():
    if module.split(".")[0] == __name__.split(".")[0]:
      for flag in defined:
        FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  app.define_help_flags()  # --help, --helpfull, -? (app.run would define them)
  if "h" not in FLAGS:
    flags.DEFINE_alias("h", "help")  # -h, as most commands take it
  app.run(wrapped, flags_parser=lambda argv: parse_flags(argv, known_only=pass_unknown))


def warn(warning: Optional[str]) -> None:
  """Prints a library call's returned warning, if any, as one `warning:` line on stderr."""
  if warning:
    print(f"warning: {warning}", file=sys.stderr)


def require(value, name: str) -> str:
  if not value:
    raise UserError(f"--{name} is required")
  return os.fspath(value)
