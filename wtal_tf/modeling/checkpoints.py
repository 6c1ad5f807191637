"""The model directory: model spec, checkpoints, and restoring a model from them."""

import contextlib
import dataclasses
import glob
import json
import os
import re
import shutil
import socket
import tempfile
import weakref
from typing import Optional

from absl import logging
import tensorflow as tf

from wtal_tf import config as cfg_lib
from wtal_tf import contract
from wtal_tf import interrupts
from wtal_tf import io_utils
from wtal_tf.data import made as made_lib
from wtal_tf.errors import UserError, first_few, op_reason, reading, shorten
from wtal_tf.modeling.model import WTALModel

SPEC_FILE = "model.json"
CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "checkpoint"  # CHECKPOINT_DIR/checkpoint: TensorFlow's record of the latest
MAX_TO_KEEP = 3
COPY_PREFIX = "wtal_tf-checkpoint-"  # + <host>-<pid>-: restore_latest's copies, in the
# temporary folder
_copies: set[str] = set()  # the copies this process's restored models are read from
DELETED_RETRIES = 5  # latest checkpoints a restore tries in turn, each deleted by a
# training in the model dir before it was read


FLAGS_FILE = contract.FLAGS_FILE  # the experiment flags of the run, as a flagfile
UNRECORDED = ("records nothing of how its training features were made (trained before "
              "model.json recorded it, or on videos not all of whose status records say the "
              "same)")
MAX_CHANGES_SHOWN = 4  # differences named in the message refusing a resume
# What makes a model dir's checkpoints one model (model.json's keys, flattened): the
# weights' shapes and what its outputs mean. Other settings (loss weights, seed, ...)
# may change on a resume; the flags' warning names them.
EXPERIMENT_FLAGS = frozenset(f.name for group in cfg_lib.EXPERIMENT_GROUPS
                             for f in dataclasses.fields(cfg_lib.GROUPS[group]))
# Flags that shape a model's evaluation, not its training: a finished model's rerun
# records its own (its final evaluation uses them)
EVALUATION_FLAGS = frozenset(f.name for group in ("localize", "eval")
                             for f in dataclasses.fields(cfg_lib.GROUPS[group]))
# One path each, which flags.cfg records absolute (since 8333cd3; relative before)
PATH_FLAGS = frozenset(f.name for group in cfg_lib.EXPERIMENT_GROUPS
                       for f in dataclasses.fields(cfg_lib.GROUPS[group])
                       if f.metadata.get("path") and f.type is str)
SPEC_TYPES = {"model": dict, "classes": list, "feature_dims": dict}  # what model.json holds
THE_MODEL = ("classes", "feature_dims", "model.num_classes", "model.streams",
             "model.attention_units", "model.loss_config.cls_loss", "model.dtype")


def spec(model: WTALModel, classes, feature_dims, features_made: Optional[dict] = None,
         timing: Optional[dict] = None) -> dict:
  """What is needed to rebuild the model without the training flags (as JSON holds it),
  how wtal_tf.extract made its training features when their records say (features_made:
  detect extracts a new video's features alike), and what a segment of them is in time
  (segment_timing: --feature_fps and --segment_frames, which turn segments into seconds)."""
  made = {"features_made": features_made} if features_made is not None else {}
  made.update({"segment_timing": timing} if timing is not None else {})
  return json.loads(json.dumps({"model": model.get_config(), "classes": list(classes),
                                "feature_dims": dict(feature_dims), **made}))


def _flat(value, key: str = "") -> dict:
  if isinstance(value, dict):
    return {k: v for name, item in value.items()
            for k, v in _flat(item, f"{key}.{name}" if key else name).items()}
  return {key: value}


def _model_changes(old_spec: dict, new_spec: dict) -> list[str]:
  old, new = ({k: v for k, v in _flat(x).items() if k.startswith(THE_MODEL)}
              for x in (old_spec, new_spec))
  return [f"{k} {shorten(json.dumps(old.get(k)))} -> {shorten(json.dumps(new.get(k)))}"
          for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _line_flag(line: str) -> str:
  """The flag a flagfile line sets (--nox: x, for a boolean x)."""
  name = line.split("=")[0].lstrip("-")
  return name[2:] if name.startswith("no") and name[2:] in EXPERIMENT_FLAGS else name


def _absolute(line: str) -> str:
  """A recorded flagfile line with a relative path of PATH_FLAGS made absolute (from the
  working folder), as records are written now: a record from before is not taken to
  differ from the same path given again."""
  name, eq, value = line.partition("=")
  if eq and _line_flag(line) in PATH_FLAGS and value and not os.path.isabs(value):
    return f"{name}={os.path.abspath(value)}"
  return line


def _flag_names(lines) -> set[str]:
  """The flags flagfile `lines` set (a boolean flipped, --x and --nox, is x)."""
  return {_line_flag(line) for line in lines if line}


def prepare(model_dir: str, model_spec: dict, flags_text: str = "",
            train_steps: Optional[int] = None) -> None:
  """Readies `model_dir` for training `model_spec`, before anything else is written.

  A dir holding checkpoints of another model (THE_MODEL differs: other features,
  classes or architecture) is a UserError naming the differences, and is left as it
  was: resuming would fail to restore, or leave a model.json that no longer fits the
  checkpoints. Then flags_text (the run's experiment flags; "": none) is written to
  MODEL_DIR/flags.cfg, with a warning naming the flags that differ from those it held
  when resuming (e.g. more --train_steps), and the spec to model.json. When the latest
  checkpoint has already reached `train_steps`, no step will use the run's training flags:
  model.json and the training flags of flags.cfg stay as the model was trained (a
  warning names those that differ); its localization and evaluation flags are the run's.
  """
  prefix = latest(model_dir)
  resuming = prefix is not None
  step = step_of(prefix)
  finished = step is not None and train_steps is not None and step >= train_steps
  if resuming:
    path, old_spec = read_spec(model_dir)
    changed = _model_changes(old_spec, model_spec)
    if changed:
      raise UserError(
          f"{path}: this model dir holds checkpoints of another model "
          f"({first_few(changed, MAX_CHANGES_SHOWN, '; ')}"
          "): resume with the flags and data it was trained with, or use a new --model_dir")
    made, made_now = old_spec.get("features_made"), model_spec.get("features_made")
    if made and made_now and made != made_now:
      raise UserError(
          f"{path}: its checkpoints were trained on features made otherwise than these "
          f"(trained vs now: {'; '.join(made_lib.differences(made, made_now))}): resume "
          "with the data they were trained on, or use a new --model_dir")
    if made and not made_now:  # (data without status records now): what it learnt from
      model_spec = {**model_spec, "features_made": made}
    if not made and made_now:  # its checkpoints' features are unknown: not these
      logging.warning("%s: %s: these are not checked against them, and it keeps recording "
                      "nothing", path, UNRECORDED)
      model_spec = {k: v for k, v in model_spec.items() if k != "features_made"}
  if flags_text:
    path = os.path.join(model_dir, FLAGS_FILE)
    if resuming and os.path.isfile(path):
      with open(path, encoding="utf-8") as f:
        old = [_absolute(line) for line in f.read().split("\n")]
      # A flag the record lacks is one a later version of the code added: not a change.
      added = _flag_names(flags_text.split("\n")) - _flag_names(old)
      if finished:  # the training flags it was trained with; this run's evaluation's
        trained = {_line_flag(l): l for l in old if l}
        lines = flags_text.split("\n")
        flags_text = "\n".join(trained.get(_line_flag(l), l) if l and _line_flag(l)
                               not in EVALUATION_FLAGS else l for l in lines)
        differ = sorted(_flag_names(set(old) ^ set(lines)) - EVALUATION_FLAGS - added)
        if differ:
          logging.warning("%s: training finished at step %s, so it keeps the training flags "
                          "it was trained with (this run's differ: %s)", path, step,
                          ", ".join(f"--{n}" for n in differ))
      changed = sorted(_flag_names(set(old) ^ set(flags_text.split("\n"))) - added)
      if changed:
        logging.warning("%s: resuming with other flags than it recorded (%s); it now "
                        "records these", path, ", ".join(f"--{n}" for n in changed))
    io_utils.write_text(path, flags_text)
  if not finished:
    io_utils.write_json(os.path.join(model_dir, SPEC_FILE), model_spec, indent=1)


def model_files(model_dir: str) -> dict[str, str]:
  """{path: what it is} of the model dir's files a tool reads (io_utils.check_writable's
  `taken`: an output given one of their paths would destroy the model)."""
  return {os.path.join(model_dir, SPEC_FILE): "model spec of --model_dir",
          os.path.join(model_dir, FLAGS_FILE): "training flags of --model_dir"}


def read_spec(model_dir: str) -> tuple[str, dict]:
  """(path, contents) of the model dir's model.json; a UserError when absent or unreadable."""
  spec_path = os.path.join(model_dir, SPEC_FILE)
  if os.path.isfile(model_dir):
    raise UserError(f"--model_dir={model_dir}: a file; give the folder training wrote (it "
                    f"holds {SPEC_FILE} and {CHECKPOINT_DIR}/)")
  if not os.path.isfile(spec_path):
    where = "" if os.path.isabs(model_dir) else f", in {os.getcwd()},"  # (e.g. the
    # relative paths of a flags.cfg an older version wrote, read from another folder)
    raise UserError(f"{spec_path}: not found (is {model_dir}{where} a trained model dir?)")
  try:
    with open(spec_path, encoding="utf-8") as f:
      model_spec = json.load(f)
  except (OSError, ValueError) as e:  # (UnicodeDecodeError is a ValueError)
    raise UserError(f"{spec_path}: unreadable model spec ({e})") from None
  if not isinstance(model_spec, dict) or not all(
      isinstance(model_spec.get(k), t) for k, t in SPEC_TYPES.items()):
    raise UserError(f"{spec_path}: unreadable model spec (expected a JSON object with "
                    f"{', '.join(f'{k} ({t.__name__})' for k, t in SPEC_TYPES.items())})")
  return spec_path, model_spec


def _named_latest(folder: str) -> Optional[str]:
  """The checkpoint the state file of `folder` names the latest (None: no state file); a
  UserError when it is damaged."""
  state_file = os.path.join(folder, STATE_FILE)
  if not os.path.lexists(state_file):
    return None
  with reading(state_file), open(state_file, "rb"):  # (TensorFlow takes one it cannot
    pass  # read for a damaged one)
  try:
    state = tf.train.get_checkpoint_state(folder)
  except ValueError:  # (an empty state file)
    state = None
  if (state is None or not state.model_checkpoint_path) and os.path.isfile(state_file):
    # (TensorFlow only warns "Checkpoint ignored" on a damaged one, and training would
    # start again from step 0 over the checkpoints there)
    held = sorted(os.path.basename(p)[:-len(".index")]
                  for p in tf.io.gfile.glob(os.path.join(folder, "*.index")))
    raise UserError(f"{state_file}: damaged: it does not say which checkpoint is the latest "
                    f"(the folder holds {', '.join(held) or 'none'}): write into it the line "
                    'model_checkpoint_path: "<one of those>", or use a new --model_dir')
  if state is None or not state.model_checkpoint_path:
    return None
  return state.model_checkpoint_path  # (joined to `folder` by TensorFlow)


def latest(model_dir: str) -> Optional[str]:
  """The prefix of the model dir's latest checkpoint, None when it has none; a UserError
  when its state file names one whose files are gone (TensorFlow would then say there
  is no checkpoint, or fail on resuming with a traceback), unless a training running
  there deleted it, saving a later one (then that one)."""
  folder = os.path.join(model_dir, CHECKPOINT_DIR)
  prefix = _named_latest(folder)
  for _ in range(DELETED_RETRIES):
    if prefix is None or os.path.isfile(prefix + ".index"):
      return prefix
    now = _named_latest(folder)
    if now == prefix:
      break
    prefix = now
  raise UserError(f"{prefix}.index: not found, though {os.path.join(folder, STATE_FILE)} "
                  "names it the latest checkpoint (its files were deleted?)")


def step_of(prefix: Optional[str]) -> Optional[int]:
  """The training step of a checkpoint (its prefix: ckpt-<step>, as training saves them);
  None for none, or another name."""
  found = re.search(r"-(\d+)$", prefix or "")
  return int(found[1]) if found else None


def load(checkpoint: tf.train.Checkpoint, prefix: str, partial: bool = False,
         shown: str = "") -> None:
  """Restores `checkpoint` from `prefix` (partial: the model only, not the optimizer); a
  UserError naming the checkpoint (`shown`, default `prefix`: the one a copy is of) when
  it cannot (truncated or corrupt files, another model's variables)."""
  try:
    status = checkpoint.restore(prefix)
    if partial:
      status.expect_partial()
    status.assert_existing_objects_matched()
  except (tf.errors.OpError, AssertionError, ValueError, IndexError) as e:
    # (IndexError: a truncated .data file, "Read less bytes than requested")
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0]  # (one line)
    if shown:
      reason = reason.replace(prefix, shown)
    raise UserError(f"{shown or prefix}: cannot restore checkpoint ({reason})") from None


def save(saver: tf.train.CheckpointManager, step: int) -> None:
  """Saves the checkpoint of `step`; a UserError naming the folder when it cannot be
  written (a full disk: TensorFlow's error, with its op, on one line), after removing
  the parts of it written."""
  try:
    saver.save(checkpoint_number=step)
  except tf.errors.OpError as e:
    for part in glob.glob(os.path.join(glob.escape(saver.directory), f"*-{step}_temp")):
      shutil.rmtree(part, ignore_errors=True)  # (TensorFlow leaves the parts it wrote)
    raise UserError(f"{saver.directory}: cannot write the checkpoint of step {step} "
                    f"({op_reason(e.message) or type(e).__name__})") from None


def manager(model_dir: str, **trackables) -> tf.train.CheckpointManager:
  ckpt = tf.train.Checkpoint(**trackables)
  return tf.train.CheckpointManager(ckpt, os.path.join(model_dir, CHECKPOINT_DIR),
                                    max_to_keep=MAX_TO_KEEP)


def _copy(prefix: str, into: Optional[str]) -> Optional[str]:
  """The prefix to read checkpoint `prefix` from: a copy of its files in folder `into`,
  or `prefix` itself when they cannot be copied there (no `into`, a full disk); None
  when some are missing (e.g. a training in the model dir deleted it, keeping
  MAX_TO_KEEP)."""
  data = glob.glob(glob.escape(prefix) + ".data-*")
  shards = {int(m[1]) for m in (re.search(r"-of-(\d+)$", f) for f in data) if m}
  if shards != {len(data)}:
    return None
  if into is None:
    return prefix
  copied = []
  try:
    for f in (prefix + ".index", *data):
      copied.append(os.path.join(into, os.path.basename(f)))
      shutil.copyfile(f, copied[-1])
  except OSError as e:
    for c in copied:
      with contextlib.suppress(OSError):
        os.remove(c)
    gone = isinstance(e, FileNotFoundError) and not os.path.exists(f)
    return None if gone else prefix
  return os.path.join(into, os.path.basename(prefix))


def _copy_prefix() -> str:
  """The start of the names of this process's copies (restore_latest): COPY_PREFIX, the
  host and the process id."""
  return f"{COPY_PREFIX}{socket.gethostname()}-{os.getpid()}-"


def _remove_orphan_copies() -> None:
  """Removes the checkpoint copies of restore_latest that processes of this host which
  are gone left in the temporary folder (killed: SIGKILL skips every cleanup)."""
  folder = tempfile.gettempdir()
  mine = re.escape(f"{COPY_PREFIX}{socket.gethostname()}-")
  for name in io_utils.entries(folder):
    found = re.fullmatch(rf"{mine}(\d+)-\w+", name)
    if not found:
      continue
    try:
      os.kill(int(found[1]), 0)
    except ProcessLookupError:
      shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
    except (OSError, OverflowError):  # (alive, another user's; or not a process id)
      pass


def _remove_copies() -> None:
  """Removes this process's copies (a Ctrl-C ends it without running their finalizers)."""
  for folder in list(_copies):
    shutil.rmtree(folder, ignore_errors=True)


interrupts.at_interrupt(_remove_copies)


def _removed_with(model: WTALModel, folder: str) -> None:
  """Has the copy `folder` removed when `model` is (or the process ends, or on Ctrl-C)."""
  _copies.add(folder)
  weakref.finalize(model, lambda: (shutil.rmtree(folder, ignore_errors=True),
                                   _copies.discard(folder)))


def _built(model_dir: str) -> tuple[WTALModel, dict]:
  """The model of `model_dir`'s model.json, built (weights not restored), and the spec."""
  spec_path, model_spec = read_spec(model_dir)
  try:
    model = WTALModel.from_config(model_spec["model"])
  except (ValueError, KeyError, TypeError) as e:
    raise UserError(f"{spec_path}: unreadable model spec ({e})") from None
  model.build_for(model_spec["feature_dims"])
  return model, model_spec


def restore_latest(model_dir: str) -> tuple[WTALModel, dict, str]:
  """The model of the latest checkpoint in `model_dir`, its spec and the checkpoint's
  prefix. It is restored from a copy (kept while the model is: variables made later,
  e.g. by compile, are restored from it then): a training running there deletes its
  oldest checkpoint at each save, which may be the one read (then the latest one then
  is). Without room for a copy, the checkpoint itself is read."""
  model, model_spec = _built(model_dir)
  folder = os.path.join(model_dir, CHECKPOINT_DIR)
  _remove_orphan_copies()
  try:
    into = tempfile.mkdtemp(prefix=_copy_prefix())
  except OSError:
    into = None
  try:
    prefix = latest(model_dir)
    for _ in range(DELETED_RETRIES):
      if prefix is None:
        raise UserError(f"{folder}: no checkpoint")
      copy = _copy(prefix, into)
      now = prefix if copy else latest(model_dir)
      if now == prefix:  # (copied; or files missing that no training deleted, which
        # TensorFlow names)
        load(tf.train.Checkpoint(model=model), copy or prefix, partial=True, shown=prefix)
        if copy and copy != prefix:
          _removed_with(model, into)
          into = None
        return model, model_spec, prefix
      prefix = now
  finally:
    if into:
      shutil.rmtree(into, ignore_errors=True)
  raise UserError(f"{folder}: its latest checkpoint was deleted before it could be read, "
                  f"{DELETED_RETRIES} times (by a training saving one every few steps?): "
                  "try again")


def restore(model_dir: str, prefix: Optional[str] = None) -> tuple[WTALModel, dict]:
  """The model of the latest checkpoint in `model_dir` (restore_latest), or of the
  checkpoint `prefix`, and its spec."""
  if prefix is None:
    return restore_latest(model_dir)[:2]
  model, model_spec = _built(model_dir)
  load(tf.train.Checkpoint(model=model), prefix, partial=True)
  return model, model_spec
