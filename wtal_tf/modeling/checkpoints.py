"""The model directory: model spec, checkpoints, and restoring a model from them."""

import json
import os

from absl import logging
import tensorflow as tf

from wtal_tf import io_utils
from wtal_tf.errors import UserError
from wtal_tf.modeling.model import WTALModel

SPEC_FILE = "model.json"
CHECKPOINT_DIR = "checkpoints"
MAX_TO_KEEP = 3


FLAGS_FILE = "flags.cfg"  # the experiment flags of the run, as a flagfile
MAX_CHANGES_SHOWN = 4  # differences named in the message refusing a resume
MAX_VALUE_CHARS = 40  # characters of a value shown in that message
NOT_THE_MODEL = ("model.name",)  # Keras' unique name (wtal_model_2 for a process's second)


def spec(model: WTALModel, classes, feature_dims) -> dict:
  """What is needed to rebuild the model without the training flags (as JSON holds it)."""
  return json.loads(json.dumps({"model": model.get_config(), "classes": list(classes),
                                "feature_dims": dict(feature_dims)}))


def _flat(value, key: str = "") -> dict:
  if isinstance(value, dict):
    return {k: v for name, item in value.items()
            for k, v in _flat(item, f"{key}.{name}" if key else name).items()}
  return {key: value}


def _shown(value) -> str:
  text = json.dumps(value)
  return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS - 1] + "…"


def check_resumable(model_dir: str, new_spec: dict) -> None:
  """A UserError, before anything is written, when `model_dir` holds checkpoints of
  another model than `new_spec` (other features, classes or architecture): resuming
  would fail to restore, or leave a model.json that no longer fits the checkpoints."""
  if tf.train.latest_checkpoint(os.path.join(model_dir, CHECKPOINT_DIR)) is None:
    return
  path, old_spec = read_spec(model_dir)
  old, new = ({k: v for k, v in _flat(x).items() if k not in NOT_THE_MODEL}
              for x in (old_spec, new_spec))
  changed = [f"{k} {_shown(old.get(k))} -> {_shown(new.get(k))}"
             for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
  if changed:
    more = len(changed) - MAX_CHANGES_SHOWN
    raise UserError(
        f"{path}: this model dir holds checkpoints of another model "
        f"({'; '.join(changed[:MAX_CHANGES_SHOWN])}{f'; {more} more' if more > 0 else ''}): "
        "resume with the flags and data it was trained with, or use a new --model_dir")


def record_flags(model_dir: str, flags_text: str) -> None:
  """Writes the run's experiment flags as MODEL_DIR/flags.cfg; when resuming with other
  flags than the file holds, says which (a warning: e.g. more --train_steps)."""
  path = os.path.join(model_dir, FLAGS_FILE)
  if tf.train.latest_checkpoint(os.path.join(model_dir, CHECKPOINT_DIR)) and os.path.isfile(path):
    with open(path, encoding="utf-8") as f:
      old = set(f.read().split("\n"))
    changed = sorted({line.split("=")[0] for line in old ^ set(flags_text.split("\n")) if line})
    if changed:
      logging.warning("%s: resuming with other flags than it recorded (%s); it now records "
                      "these", path, ", ".join(changed))
  io_utils.write_text(path, flags_text)


def save_spec(model_dir: str, model_spec: dict) -> None:
  io_utils.write_json(os.path.join(model_dir, SPEC_FILE), model_spec, indent=1)


def read_spec(model_dir: str) -> tuple[str, dict]:
  """(path, contents) of the model dir's model.json; a UserError when absent or unreadable."""
  spec_path = os.path.join(model_dir, SPEC_FILE)
  if os.path.isfile(model_dir):
    raise UserError(f"--model_dir={model_dir}: a file; give the folder training wrote (it "
                    f"holds {SPEC_FILE} and {CHECKPOINT_DIR}/)")
  if not os.path.isfile(spec_path):
    raise UserError(f"{spec_path}: not found (is {model_dir} a trained model dir?)")
  try:
    with open(spec_path, encoding="utf-8") as f:
      return spec_path, json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f"{spec_path}: unreadable model spec ({e})") from None


def manager(model_dir: str, **trackables) -> tf.train.CheckpointManager:
  ckpt = tf.train.Checkpoint(**trackables)
  return tf.train.CheckpointManager(ckpt, os.path.join(model_dir, CHECKPOINT_DIR),
                                    max_to_keep=MAX_TO_KEEP)


def restore(model_dir: str) -> tuple[WTALModel, dict]:
  """The model of the latest checkpoint in `model_dir`, and its spec."""
  spec_path, model_spec = read_spec(model_dir)
  try:
    model = WTALModel.from_config(model_spec["model"])
  except (ValueError, KeyError, TypeError) as e:
    raise UserError(f"{spec_path}: unreadable model spec ({e})") from None
  model.build_for(model_spec["feature_dims"])
  latest = tf.train.latest_checkpoint(os.path.join(model_dir, CHECKPOINT_DIR))
  if latest is None:
    raise UserError(f"{os.path.join(model_dir, CHECKPOINT_DIR)}: no checkpoint")
  try:
    status = tf.train.Checkpoint(model=model).restore(latest).expect_partial()
    status.assert_existing_objects_matched()
  except (tf.errors.OpError, AssertionError, ValueError) as e:
    raise UserError(f"{latest}: cannot restore checkpoint ({e})") from None
  return model, model_spec
