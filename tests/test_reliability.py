"""Interrupted runs, atomic writes and numerical safety (issue: reliability)."""

import errno
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, tiny_config, write_dataset
from wtal_tf.errors import UserError
from wtal_tf.modeling import checkpoints as checkpointing
from wtal_tf import io_utils
from wtal_tf.training import event_log
from wtal_tf.training import trainer as training


def pipeline_cmd(data_dir, model_dir, steps):
  return [sys.executable, "-m", "wtal_tf.pipeline", f"--data_dir={data_dir}",
          f"--model_dir={model_dir}", f"--train_steps={steps}", "--checkpoint_every=50",
          "--log_every=50", "--eval_every=0", "--attention_units=16", "--num_vis_videos=0"]


def latest_step(model_dir):
  path = tf.train.latest_checkpoint(os.path.join(model_dir, checkpointing.CHECKPOINT_DIR))
  return int(path.rsplit("-", 1)[1]) if path else 0


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
  train = {f"t{k}": (["A"] if k % 2 else ["B"], 5 + 3 * k) for k in range(12)}
  data_dir = write_dataset(tmp_path / "d", train, {"x": (["A"], 30), "y": (["B"], 20)},
                           classes=("A", "B"), d=8)
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
  steps = 1000  # killed once step 100 is saved: 900 steps (seconds) left to kill it in
  subprocess.run(pipeline_cmd(data_dir, tmp_path / "once", steps), check=True, cwd=REPO, env=env,
                 capture_output=True)
  killed = tmp_path / "killed"
  proc = subprocess.Popen(pipeline_cmd(data_dir, killed, steps), cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 120
  while latest_step(killed) < 100 and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert proc.poll() is None, "training finished before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  interrupted_at = latest_step(killed)
  assert 0 < interrupted_at < steps
  subprocess.run(pipeline_cmd(data_dir, killed, steps), check=True, cwd=REPO, env=env,
                 capture_output=True)
  a, _ = checkpointing.restore(str(tmp_path / "once"))
  b, _ = checkpointing.restore(str(killed))
  for x, y in zip(a.weights, b.weights):
    np.testing.assert_array_equal(x.numpy(), y.numpy())
  assert ((tmp_path / "once" / "detections_test.json").read_text()
          == (killed / "detections_test.json").read_text().replace(str(killed), str(tmp_path / "once")))
  scores = [json.loads((d / "detections_test.eval.json").read_text())
            for d in (tmp_path / "once", killed)]
  assert [s.pop("detections") for s in scores] == [  # (each names its own detections)
      str(d / "detections_test.json") for d in (tmp_path / "once", killed)]
  assert scores[0] == scores[1]


def test_interrupted_write_keeps_previous_file(tmp_path, monkeypatch):
  path = tmp_path / "detections.json"
  io_utils.write_json(str(path), {"results": {"v": []}})
  before = path.read_text()
  umask = os.umask(0)
  os.umask(umask)
  assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
  with pytest.raises(TypeError):  # fails while serialising: nothing is written
    io_utils.write_json(str(path), {"results": {"v": [object()]}})
  assert path.read_text() == before

  def killed_during_rename(src, dst):
    raise KeyboardInterrupt
  monkeypatch.setattr(os, "replace", killed_during_rename)
  with pytest.raises(KeyboardInterrupt):
    io_utils.write_json(str(path), {"results": {"v": [1, 2, 3]}})
  assert path.read_text() == before
  assert os.listdir(tmp_path) == ["detections.json"]  # no temporary left behind


def test_a_full_disk_is_a_user_error_naming_the_file_and_keeps_the_old_one(tmp_path,
                                                                          monkeypatch):
  """A full disk met while writing (model.json, detections, a PNG, make_synthetic's
  folder) was an OSError traceback with exit status 1."""
  path = tmp_path / "detections.json"
  io_utils.write_json(str(path), {"results": {}})

  def full(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  monkeypatch.setattr(os, "fsync", full)
  with pytest.raises(UserError) as e:
    io_utils.write_json(str(path), {"results": {"v": []}})
  assert str(e.value) == f"{path}: cannot write (No space left on device)"
  assert isinstance(e.value, OSError) and e.value.errno == errno.ENOSPC  # (for `except OSError`)
  assert os.listdir(tmp_path) == ["detections.json"]
  assert json.loads(path.read_text()) == {"results": {}}
  with pytest.raises(UserError, match=r"/new: cannot write \(No space left on device\)$"):
    with io_utils.atomic_dir(str(tmp_path / "new")) as tmp:
      io_utils.write_text(os.path.join(tmp, "a.txt"), "a")
  assert os.listdir(tmp_path) == ["detections.json"]


def _mount_tmpfs(folder, size: str) -> None:
  folder.mkdir(parents=True, exist_ok=True)
  if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                    capture_output=True, check=False).returncode:
    pytest.skip("cannot mount a tmpfs here")


def test_a_real_full_disk_is_one_line(tmp_path):
  """On a small tmpfs (root only; skipped where mounting is not allowed)."""
  disk = tmp_path / "disk"
  _mount_tmpfs(disk, "64k")
  try:
    proc = subprocess.run([sys.executable, "-m", "wtal_tf.tools.make_synthetic",
                           f"--output_dir={disk / 'syn'}"], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: {disk / 'syn'}: cannot write (")
    assert len(proc.stderr.splitlines()) == 1 and not os.listdir(disk)
  finally:
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_event_writes_tensorflow_drops_are_noticed(tmp_path, monkeypatch):
  """TensorFlow's summary writer drops a write the disk refuses without an error, on
  flush too: `train` exited 0 with its TensorBoard data cut short."""
  events = event_log.EventLog(str(tmp_path / "eval"))
  with events.as_default(1):
    events.scalar("a", 1.0)
    events.image("b", np.zeros((1, 4, 4, 3), np.float32))
  events.flush()
  assert (events.written, events.complete) == (3, 3)
  monkeypatch.setattr(tf.summary, "scalar", lambda *args, **kwargs: True)  # (dropped)
  with events.as_default(2):
    events.scalar("a", 2.0)
  with pytest.raises(UserError, match=rf"^{re.escape(events.path)}: cannot write \(1 of its 4 "
                     r"TensorBoard events are missing: a full disk\?\)$"):
    events.flush()


def test_event_writes_tensorflow_refuses_are_one_line(tmp_path, monkeypatch):
  """Or TensorFlow raises, when it flushes (at the end of an as_default block, or with a
  full queue): a ResourceExhaustedError traceback, exit status 1 (review)."""
  events = event_log.EventLog(str(tmp_path / "train"))

  def full(*args, **kwargs):
    raise tf.errors.ResourceExhaustedError(
        None, None, f"{events.path}; No space left on device [Op:FlushSummaryWriter]")
  monkeypatch.setattr(type(events.writer), "flush", full)
  with pytest.raises(UserError, match=rf"^{re.escape(events.path)}: cannot write \(TensorBoard "
                     r"events: No space left on device\)$"):
    with events.as_default(1):
      events.scalar("a", 1.0)


def test_an_evaluation_whose_events_are_lost_is_not_marked_logged(tmp_path):
  """On a full disk (a tmpfs as model_dir/eval; root only): the evaluation's events were
  cut short, eval_history.json marked the step logged, and a resumed run never wrote them."""
  data_dir = write_dataset(tmp_path / "d", {"a": (["A"], 4), "b": (["B"], 3)}, {"x": (["A"], 5)},
                           classes=("A", "B"))
  cfg = tiny_config(data_dir, tmp_path / "m", train={"eval_every": 10, "num_vis_videos": 1})
  _mount_tmpfs(tmp_path / "m" / "eval", "8k")
  try:
    with pytest.raises(UserError, match=r"/m/eval/events\.out\.tfevents\.[^:]*: cannot write "
                       r"\(\d+ of its \d+ TensorBoard events are missing: a full disk\?\)$"):
      training.train(cfg)
    assert not (tmp_path / "m" / training.EVAL_HISTORY_FILE).exists()
  finally:
    subprocess.run(["umount", "-l", str(tmp_path / "m" / "eval")], check=False)
  assert training.train(cfg).steps == 20  # room again: resumed from step 10, logged again
  history = json.loads((tmp_path / "m" / training.EVAL_HISTORY_FILE).read_text())
  assert [s for s, _ in history["evaluations"][0]["history"]] == [10, 20]


def test_a_resume_runs_the_evaluation_its_checkpoint_is_due(tmp_path, monkeypatch):
  """A run that ended between a checkpoint and its evaluation (here: its events lost)
  left that evaluation out of the resumed run's history and TensorBoard."""
  data_dir = write_dataset(tmp_path / "d", {"a": (["A"], 4), "b": (["B"], 3)}, {"x": (["A"], 5)},
                           classes=("A", "B"))
  cfg = tiny_config(data_dir, tmp_path / "m", train={"eval_every": 10})
  flush = event_log.EventLog.flush

  def lost(self):
    if self.folder.endswith("eval"):
      raise UserError("lost")
    flush(self)
  monkeypatch.setattr(event_log.EventLog, "flush", lost)
  with pytest.raises(UserError, match="^lost$"):
    training.train(cfg)
  assert checkpointing.step_of(checkpointing.latest(str(tmp_path / "m"))) == 10
  assert not (tmp_path / "m" / training.EVAL_HISTORY_FILE).exists()
  monkeypatch.setattr(event_log.EventLog, "flush", flush)
  assert [s for s, _ in training.train(cfg).history] == [10, 20]
  tags = [(e.step, v.tag) for p in sorted((tmp_path / "m" / "eval").iterdir())
          for e in tf.compat.v1.train.summary_iterator(str(p)) for v in e.summary.value]
  # (step 10 twice: here the first run's events were written, only its flush "failed")
  assert sorted(s for s, tag in tags if tag == "mAP@0.5") == [10, 10, 20]


def test_a_checkpoint_that_cannot_be_written_is_a_user_error(tmp_path, monkeypatch):
  data_dir = write_dataset(tmp_path / "d", {"a": (["A"], 4), "b": (["B"], 3)}, {"x": (["A"], 5)},
                           classes=("A", "B"))
  cfg = tiny_config(data_dir, tmp_path / "m")

  def full(self, checkpoint_number=None):  # (as TensorFlow fails: parts written, in a
    # folder beside the checkpoints)
    os.makedirs(os.path.join(self.directory, f"ckpt-{checkpoint_number}_temp"))
    pathlib.Path(self.directory, f"ckpt-{checkpoint_number}_temp", "part-00000").touch()
    raise tf.errors.ResourceExhaustedError(
        None, None, f"{{{{function_node __wrapped__SaveV2_dtypes_7_device_/job:localhost}}}} "
        f"{self.directory}/ckpt-10_temp/part-00000-of-00001.data-00000-of-00001.tempstate1; "
        "No space left on device [Op:SaveV2]")
  monkeypatch.setattr(tf.train.CheckpointManager, "save", full)
  with pytest.raises(UserError) as e:
    training.train(cfg)
  assert str(e.value) == (f"{tmp_path / 'm' / 'checkpoints'}: cannot write the checkpoint of "
                          "step 10 (No space left on device)")
  assert os.listdir(tmp_path / "m" / "checkpoints") == []


@pytest.mark.parametrize("damage", ["", 'model_checkpoint_path: "ckpt-2'])
def test_a_damaged_checkpoint_state_file_is_refused_not_started_over(tmp_path, damage):
  """An empty state file (a copy onto a full disk) was a ValueError traceback; one cut off
  mid-line was ignored by TensorFlow, and training began again at step 0 over the
  checkpoints there."""
  data_dir = write_dataset(tmp_path / "d", {"a": (["A"], 4), "b": (["B"], 3)}, {"x": (["A"], 5)},
                           classes=("A", "B"))
  cfg = tiny_config(data_dir, tmp_path / "m")
  training.train(cfg)
  state = tmp_path / "m" / "checkpoints" / "checkpoint"
  state.write_text(damage)
  before = _model_dir_files(tmp_path / "m")
  with pytest.raises(UserError) as e:
    training.train(cfg.replace(train={"train_steps": 30}))
  assert str(e.value) == (
      f"{state}: damaged: it does not say which checkpoint is the latest (the folder holds "
      'ckpt-10, ckpt-20): write into it the line model_checkpoint_path: "<one of those>", '
      "or use a new --model_dir")
  assert _model_dir_files(tmp_path / "m") == before
  state.write_text('model_checkpoint_path: "ckpt-20"\n')
  assert training.train(cfg.replace(train={"train_steps": 30})).steps == 30


@pytest.mark.parametrize("how", ["no permission", "a folder"])
def test_a_checkpoint_state_file_that_cannot_be_read_is_named_so(tmp_path, how):
  """(Review) One without read permission was reported 'damaged'."""
  data_dir = write_dataset(tmp_path / "d", {"a": (["A"], 4), "b": (["B"], 3)}, {"x": (["A"], 5)},
                           classes=("A", "B"))
  cfg = tiny_config(data_dir, tmp_path / "m", train={"train_steps": 2})
  training.train(cfg)
  state = tmp_path / "m" / "checkpoints" / "checkpoint"
  if how == "a folder":
    state.unlink()
    state.mkdir()
  else:
    state.chmod(0)
    if os.access(state, os.R_OK):
      pytest.skip("running as a user that can read anything")
  with pytest.raises(UserError, match=rf"^{state}: cannot read \((Permission denied|Is a "
                     r"directory)\)$"):
    checkpointing.latest(cfg.train.model_dir)


def test_a_folder_written_whole_may_have_the_longest_name(tmp_path):
  """atomic_dir (make_synthetic's output folder) named with MAX_NAME_BYTES bytes: its
  temporary folder's name is shortened to fit, as atomic_path's is."""
  path = tmp_path / ("d" * io_utils.MAX_NAME_BYTES)
  with io_utils.atomic_dir(str(path)) as tmp:
    pathlib.Path(tmp, "a.txt").write_text("a")
  assert os.listdir(tmp_path) == [path.name]
  assert (path / "a.txt").read_text() == "a"


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  data_dir = write_dataset(tmp_path / "d", {"a": (["A"], 4), "b": (["B"], 3)},
                           {"x": (["A"], 5)}, classes=("A", "B"))
  # Finite but extreme features overflow float32 in the forward pass.
  for split_video in (("train", "a"), ("train", "b")):
    for s in ("rgb", "flow"):
      p = data_dir / "features" / split_video[0] / s / f"{split_video[1]}.npy"
      np.save(p, np.full((4 if split_video[1] == "a" else 3, 4), 3e38, np.float32))
  cfg = tiny_config(data_dir, tmp_path / "m", train={"model_dir": str(tmp_path / "m"),
                                                     "train_steps": 10, "checkpoint_every": 1,
                                                     "log_every": 1, "num_vis_videos": 0})
  with pytest.raises(training.NonFiniteLoss, match="non-finite|loss became") as e:
    training.train(cfg)
  assert "the last good checkpoint is kept" in str(e.value)
  model, _ = checkpointing.restore(str(tmp_path / "m"))
  assert all(np.isfinite(w.numpy()).all() for w in model.weights)
  # Before the first checkpoint: said so (it said "the last good checkpoint is kept (None)").
  with pytest.raises(training.NonFiniteLoss, match="before any checkpoint was saved$"):
    training.train(cfg.replace(train={"model_dir": str(tmp_path / "m2"),
                                      "checkpoint_every": 100}))


def _model_dir_files(model_dir):
  return {p.relative_to(model_dir): p.read_bytes() for p in model_dir.rglob("*") if p.is_file()
          and p.parts[len(model_dir.parts)] not in ("train", "eval")}  # not the event logs


def test_resuming_another_model_is_refused_before_anything_is_written(tmp_path, caplog):
  data = write_dataset(tmp_path / "d", {"a": (["A"], 4), "b": (["B"], 3)},
                       {"x": (["A"], 5)}, classes=("A", "B"))
  wider = write_dataset(tmp_path / "w", {"a": (["A"], 4), "b": (["B"], 3)},
                        {"x": (["A"], 5)}, classes=("A", "B"), d=6)
  model_dir = tmp_path / "m"
  cfg = tiny_config(data, model_dir, train={"train_steps": 2, "checkpoint_every": 1})
  recorded = "--attention_units=8\n--train_steps=2\n--alpha=0.1\n--deterministic\n"
  training.train(cfg, flags_text=recorded)
  before = _model_dir_files(model_dir)
  assert (model_dir / "flags.cfg").read_text() == recorded

  for other, expected in (
      (cfg.replace(data={"data_dir": str(wider)}), r"feature_dims.rgb 4 -> 6"),
      (cfg.replace(model={"attention_units": 16}), r"model.attention_units 8 -> 16")):
    with pytest.raises(training.UserError, match=r"m/model.json: this model dir holds "
                       rf"checkpoints of another model \(.*{expected}.*\): resume with"):
      training.train(other.replace(train={"train_steps": 4}),
                     flags_text="--attention_units=16\n")
    assert _model_dir_files(model_dir) == before  # flags.cfg, model.json, checkpoints

  # The same model with more steps and another loss weight resumes; the changed flags
  # are named (a boolean flipped once).
  caplog.set_level("WARNING")
  training.train(cfg.replace(train={"train_steps": 3}, loss={"alpha": 0.5}),
                 flags_text="--train_steps=3\n--alpha=0.5\n--nodeterministic\n")
  assert "resuming with other flags than it recorded (--alpha, --attention_units, " \
      "--deterministic, --train_steps)" in caplog.text
  caplog.clear()
  training.train(cfg.replace(train={"train_steps": 4}, loss={"alpha": 0.5}),
                 flags_text="--train_steps=4\n--alpha=0.5\n--deterministic\n")
  assert "(--deterministic, --train_steps)" in caplog.text
  caplog.clear()  # a flag its record lacks (added to the code since): not named
  training.train(cfg.replace(train={"train_steps": 4}, loss={"alpha": 0.5}),
                 flags_text="--train_steps=4\n--alpha=0.5\n--deterministic\n--new_flag=1\n")
  assert "resuming with other flags" not in caplog.text
  assert (model_dir / "flags.cfg").read_text() == (
      "--train_steps=4\n--alpha=0.5\n--deterministic\n--new_flag=1\n")
  assert json.loads((model_dir / "model.json").read_text())["model"]["loss_config"]["alpha"] == 0.5
  # Run again when finished, with another weight: no step uses it, so the records stay
  # (found by a new user: they said --alpha=0.3 of a model trained with 0.5).
  before = _model_dir_files(model_dir)
  caplog.clear()
  training.train(cfg.replace(train={"train_steps": 4}, loss={"alpha": 0.3}),
                 flags_text="--train_steps=4\n--alpha=0.3\n--deterministic\n--new_flag=1\n")
  assert (f"{model_dir / 'flags.cfg'}: training finished at step 4, so it keeps the "
          "training flags it was trained with (this run's differ: --alpha)") in caplog.text
  assert _model_dir_files(model_dir) == before
  # ... but its localization flags are this run's: its final evaluation used them.
  training.train(cfg.replace(train={"train_steps": 4}, loss={"alpha": 0.3},
                             localize={"theta": 0.3}),
                 flags_text="--train_steps=4\n--alpha=0.3\n--nodeterministic\n--new_flag=1\n"
                 "--theta=0.3\n")
  assert (model_dir / "flags.cfg").read_text() == (
      "--train_steps=4\n--alpha=0.5\n--deterministic\n--new_flag=1\n--theta=0.3\n")
  assert json.loads((model_dir / "model.json").read_text())["model"]["loss_config"]["alpha"] == 0.5


def test_a_record_with_relative_paths_is_not_taken_to_differ_from_the_same_paths(
    tmp_path, monkeypatch, caplog):
  """Found in review: flags.cfg records paths absolute since 8333cd3; a model recorded
  before (relative paths) resumed from the same folder warned its paths had changed."""
  monkeypatch.chdir(tmp_path)
  write_dataset(tmp_path / "d", {"a": (["A"], 4), "b": (["B"], 3)}, {"x": (["A"], 5)},
                classes=("A", "B"))
  cfg = tiny_config("d", "m", train={"model_dir": "m", "train_steps": 2, "eval_every": 0,
                                     "num_vis_videos": 0})
  flags_text = lambda steps: f"--data_dir={tmp_path / 'd'}\n--train_steps={steps}\n"
  training.train(cfg, flags_text=flags_text(2))
  (tmp_path / "m" / "flags.cfg").write_text("--data_dir=d\n--train_steps=2\n")  # as before
  caplog.set_level("WARNING")
  training.train(cfg.replace(train={"train_steps": 3}), flags_text=flags_text(3))
  assert "resuming with other flags than it recorded (--train_steps)" in caplog.text


def test_a_run_that_fails_on_its_data_records_no_flags(tmp_path):
  model_dir = tmp_path / "m"
  proc = subprocess.run([sys.executable, "-m", "wtal_tf.train", f"--model_dir={model_dir}",
                         f"--data_dir={tmp_path / 'absent'}"], cwd=REPO, capture_output=True,
                        text=True)
  assert proc.returncode == 2 and "absent" in proc.stderr and "Traceback" not in proc.stderr
  assert not (model_dir / "flags.cfg").exists()
  # ... and leaves no empty model dir it made (found by a new user), but keeps folders
  # that were there before.
  (tmp_path / "kept").mkdir()
  for made in (tmp_path / "new" / "sub", tmp_path / "kept" / "sub"):
    with pytest.raises(training.UserError, match="absent: data directory not found"):
      training.train(tiny_config(tmp_path / "absent", made))
  assert [p.name for p in tmp_path.iterdir()] == ["kept"]  # (m too: the command's)
  assert not any((tmp_path / "kept").iterdir())
  with pytest.raises(training.UserError):
    training.train(tiny_config(tmp_path / "absent", tmp_path / "kept"))
  assert (tmp_path / "kept").is_dir()  # there before: kept, though empty


def test_evaluations_of_earlier_runs_stay_in_the_history(tmp_path):
  """Found by a new user: a rerun or resume of an ablation rewrote its mAP-over-steps curve
  with only that run's evaluations (the earlier ones were lost)."""
  data = write_dataset(tmp_path / "d", {"a": (["A"], 4), "b": (["B"], 3)},
                       {"x": (["A"], 5)}, classes=("A", "B"))
  cfg = tiny_config(data, tmp_path / "m", train={"train_steps": 4, "eval_every": 2,
                                                 "checkpoint_every": 2})
  first = training.train(cfg)
  assert [s for s, _ in first.history] == [2, 4]
  longer = training.train(cfg.replace(train={"train_steps": 6}))
  assert [s for s, _ in longer.history] == [2, 4, 6]
  for (s, a), (t, b) in zip(first.history, longer.history):
    assert s == t and np.array_equal(a, b)  # the earlier run's numbers, kept
  again = training.train(cfg.replace(train={"train_steps": 6}))  # finished: step 6 again
  assert [s for s, _ in again.history] == [2, 4, 6]
  saved = json.loads((tmp_path / "m" / training.EVAL_HISTORY_FILE).read_text())["evaluations"]
  assert len(saved) == 1 and [s for s, _ in saved[0]["history"]] == [2, 4, 6]
  assert saved[0]["settings"]["tious"] == list(cfg.eval.thresholds)
  # Other evaluation settings (tIoUs, localization): their own history; the first is kept.
  for other in (cfg.replace(eval={"tiou": "0.5"}), cfg.replace(localize={"theta": 0.3})):
    assert [s for s, _ in training.train(other.replace(train={"train_steps": 6})).history] == [6]
  again = training.train(cfg.replace(train={"train_steps": 6}))
  assert [s for s, _ in again.history] == [2, 4, 6]
  saved = json.loads((tmp_path / "m" / training.EVAL_HISTORY_FILE).read_text())["evaluations"]
  assert len(saved) == 3
