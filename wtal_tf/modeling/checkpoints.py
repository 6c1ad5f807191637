"""The model directory: model spec, checkpoints, and restoring a model from them."""

import json
import os

import tensorflow as tf

from wtal_tf import io_utils
from wtal_tf.errors import UserError
from wtal_tf.modeling.model import WTALModel

SPEC_FILE = "model.json"
CHECKPOINT_DIR = "checkpoints"
MAX_TO_KEEP = 3


def save_spec(model_dir: str, model: WTALModel, classes, feature_dims) -> None:
  """Writes what is needed to rebuild the model without the training flags."""
  io_utils.write_json(os.path.join(model_dir, SPEC_FILE),
                      {"model": model.get_config(), "classes": list(classes),
                       "feature_dims": dict(feature_dims)}, indent=1)


def manager(model_dir: str, **trackables) -> tf.train.CheckpointManager:
  ckpt = tf.train.Checkpoint(**trackables)
  return tf.train.CheckpointManager(ckpt, os.path.join(model_dir, CHECKPOINT_DIR),
                                    max_to_keep=MAX_TO_KEEP)


def restore(model_dir: str) -> tuple[WTALModel, dict]:
  """The model of the latest checkpoint in `model_dir`, and its spec."""
  spec_path = os.path.join(model_dir, SPEC_FILE)
  if not os.path.isfile(spec_path):
    raise UserError(f"{spec_path}: not found (is {model_dir} a trained model dir?)")
  try:
    with open(spec_path, encoding="utf-8") as f:
      spec = json.load(f)
    model = WTALModel.from_config(spec["model"])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise UserError(f"{spec_path}: unreadable model spec ({e})") from None
  model.build_for(spec["feature_dims"])
  latest = tf.train.latest_checkpoint(os.path.join(model_dir, CHECKPOINT_DIR))
  if latest is None:
    raise UserError(f"{os.path.join(model_dir, CHECKPOINT_DIR)}: no checkpoint")
  try:
    status = tf.train.Checkpoint(model=model).restore(latest).expect_partial()
    status.assert_existing_objects_matched()
  except (tf.errors.OpError, AssertionError, ValueError) as e:
    raise UserError(f"{latest}: cannot restore checkpoint ({e})") from None
  return model, spec
