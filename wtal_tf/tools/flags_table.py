"""Prints docs/flags.md, the flag reference, from the config fields and the tools' definitions.

python -m wtal_tf.tools.flags_table > docs/flags.md
"""

import dataclasses
import importlib

from absl import flags

from wtal_tf import cli
from wtal_tf import config

HEADER = """# Flags

Every hyperparameter is a field of a config group in `wtal_tf/config.py`
(default, help, bounds) and becomes a flag of the same name; a flag only one
tool needs is defined by that tool. All are optional. This page is generated
by `python -m wtal_tf.tools.flags_table > docs/flags.md`; a test fails when it
is stale. Flagfiles in `flags/` list only overrides.
"""
EXPERIMENT_TOOLS = ("train", "train_eval", "localize", "evaluate", "visualize", "ablation",
                    "mv", "detect", "tools.attention_stats")
TOOLS = EXPERIMENT_TOOLS + ("extract", "tools.make_synthetic", "tools.thumos14_to_json")


def group_table(group: str) -> str:
  fv = flags.FlagValues()
  cli.define_flags((group,), fv=fv)
  return cli.flags_markdown(fv)


def tool_table(tool: str) -> str:
  """The flags `tool` defines besides the config groups' ("" when none)."""
  fv = flags.FlagValues()
  importlib.import_module(f"wtal_tf.{tool}").define_flags(fv)
  own = [n for n in fv if n not in cli.flag_fields(cli.GROUPS)]
  return cli.flags_markdown(fv, own) if own else ""


def page() -> str:
  parts = [HEADER, "## Experiment flags\n",
           f"Accepted by {', '.join(f'`{t}`' for t in EXPERIMENT_TOOLS)}, so one flagfile "
           "serves them all; `MODEL_DIR/flags.cfg` records them.\n"]
  for group in config.EXPERIMENT_GROUPS:
    parts += [f"### {group}\n", group_table(group) + "\n"]
  parts += ["## Raw video\n",
            f"`extract` takes the extract group; `detect` takes the experiment flags, the "
            f"detect group and of the extract group {', '.join(config.ENCODING_FIELDS)}.\n"]
  for group in (f.name for f in dataclasses.fields(config.Config)):
    if group not in config.EXPERIMENT_GROUPS:
      parts += [f"### {group}\n", group_table(group) + "\n"]
  parts += ["## Tool flags\n"]
  for tool in TOOLS:
    table = tool_table(tool)
    if table:
      parts += [f"### `python -m wtal_tf.{tool}`\n", table + "\n"]
  return "\n".join(parts).rstrip()


def main():
  print(page())


if __name__ == "__main__":
  main()
