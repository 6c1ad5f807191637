"""Commands run at once on the same folders (found by a concurrency trial)."""

import errno
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from conftest import REPO, config_of_flagfile, tiny_config
from wtal_tf import io_utils
from wtal_tf import locks
from wtal_tf.errors import UserError
from wtal_tf.evaluation import metrics
from wtal_tf.inference import batch
from wtal_tf.modeling import checkpoints
from wtal_tf.training import train_eval
from wtal_tf.training import trainer

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
RESTORES = 20  # in a row, alongside a training
WAIT_SECONDS = 120  # for another process to reach a point (a TensorFlow import on a busy machine)


def wait_for(condition, what):
  deadline = time.time() + WAIT_SECONDS
  while not condition():
    assert time.time() < deadline, f"timed out waiting for {what}"
    time.sleep(0.05)


class Holder:
  """Another process holding a lock of wtal_tf.locks until released."""

  def __init__(self, call: str):
    self.proc = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom wtal_tf import locks\n"
         f"with locks.{call}:\n  print('held', flush=True)\n  sys.stdin.read()"],
        cwd=REPO, env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert self.proc.stdout.readline() == "held\n"

  def release(self):
    self.proc.stdin.close()
    assert self.proc.wait(WAIT_SECONDS) == 0


def test_a_training_in_a_model_dir_another_process_is_training_in_is_refused(good, tmp_path):
  """Found by the trial: two trainings started within a second on one --model_dir both
  exited 0, leaving model.json and flags.cfg of one model and checkpoints of the other
  (or one died halfway through a save, naming a missing file)."""
  model_dir = tmp_path / "m"
  model_dir.mkdir()
  other = Holder(f"sole_writer({str(model_dir)!r}, 'training', '--model_dir')")
  cfg = tiny_config(good, model_dir, train={"train_steps": 2})
  refused = (rf"^{re.escape(str(model_dir))}: another run is writing in it \(training, pid "
             rf"{other.proc.pid} on .+, since .+ UTC\): wait for it to end, or give another "
             r"--model_dir$")
  with pytest.raises(UserError, match=refused):
    trainer.train(cfg)
  with pytest.raises(UserError, match=refused):  # (before the data is read, a while maybe)
    train_eval.train_and_evaluate(cfg.replace(data={"data_dir": str(tmp_path / "none")}))
  assert os.listdir(model_dir) == [locks.LOCK_FILE]  # (nothing of this run)
  other.release()
  assert not model_dir.joinpath(locks.LOCK_FILE).exists()
  assert trainer.train(cfg).steps == 2
  assert os.listdir(model_dir) and locks.LOCK_FILE not in os.listdir(model_dir)


def test_commands_alongside_a_training_and_a_killed_trainings_hold(good, tmp_path):
  """Beside a training that saves each step (deleting its oldest checkpoint): a second
  training is refused in one line (it used to exit 0, or die mid-save); restores in a row,
  as localize does, each read a checkpoint (3 of 5 localize runs failed, once with ~50
  TensorFlow warnings). Then the killed training's lock file holds nothing."""
  model_dir = tmp_path / "m"
  command = [sys.executable, "-m", "wtal_tf.train", f"--data_dir={good}",
             f"--model_dir={model_dir}", "--attention_units=8", "--eval_every=0",
             "--num_vis_videos=0"]
  first = subprocess.Popen([*command, "--train_steps=1000000", "--checkpoint_every=1"],
                           cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
  try:
    wait_for(lambda: checkpoints.latest(str(model_dir)) or first.poll() is not None,
             "the first training's checkpoint")
    assert first.poll() is None
    others = [subprocess.Popen(args, cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for args in (
        [*command, "--train_steps=2"],
        [sys.executable, "-c", "from wtal_tf.config import LocalizeConfig\n"
         "from wtal_tf.inference.predictor import load_predictor\n"
         f"for _ in range({RESTORES}):\n"
         f"  print(load_predictor({str(model_dir)!r}, LocalizeConfig()).step)"])]
    (_, second), (restored, restoring) = (p.communicate(timeout=WAIT_SECONDS) for p in others)
    assert first.poll() is None  # (it trains on)
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait()
  assert others[0].returncode == 2 and second.startswith(
      f"error: {model_dir}: another run is writing in it (training, pid {first.pid} on ")
  assert len(second.splitlines()) == 1
  assert "--train_steps=1000000" in (model_dir / "flags.cfg").read_text().splitlines()
  assert others[1].returncode == 0, restoring
  steps = [int(s) for s in restored.split()]
  assert len(steps) == RESTORES and steps == sorted(steps) and steps[0] < steps[-1]
  assert "WARNING:tensorflow" not in restoring and "unrestored" not in restoring
  assert (model_dir / locks.LOCK_FILE).exists()  # a killed run's file holds nothing
  step = checkpoints.step_of(checkpoints.latest(str(model_dir)))
  trainer.train(config_of_flagfile(model_dir / "flags.cfg").replace(
      train={"train_steps": step + 1}))
  assert not (model_dir / locks.LOCK_FILE).exists()


def test_holding_a_model_dir_again_in_the_same_process_is_allowed(tmp_path):
  held = tmp_path / "new"  # (made, also when a run that failed removed it: found by a trial)
  with locks.sole_writer(str(held), "training", "--model_dir"):
    with locks.sole_writer(str(held), "training", "--model_dir"):
      assert (held / locks.LOCK_FILE).exists()
    assert (held / locks.LOCK_FILE).exists()
  assert os.listdir(held) == []


def test_replacing_in_a_folder_waits_for_the_process_replacing_there(tmp_path):
  other = Holder(f"replacing_in({str(tmp_path)!r})")
  entered = threading.Event()

  def replace():
    with locks.replacing_in(str(tmp_path)):
      entered.set()

  thread = threading.Thread(target=replace)
  thread.start()
  assert not entered.wait(1.0)
  other.release()
  assert entered.wait(WAIT_SECONDS)
  thread.join()
  assert os.listdir(tmp_path) == []  # (no file made)


def test_localize_does_not_replace_detections_scored_while_it_worked(tiny_model, monkeypatch,
                                                                     caplog):
  """Found by the trial: `localize` alongside `train_eval` replaced the detections
  train_eval had just written and scored (of its final model) with an older
  checkpoint's, and removed their scores: the file was checked only before the work."""
  model_dir = pathlib.Path(tiny_model.train.model_dir)
  default, scores = model_dir / "detections_test.json", model_dir / "detections_test.eval.json"
  own = tiny_model.localize.for_model(tiny_model.loss.cls_loss)
  detect = batch.detect

  def meanwhile(*args, **kw):  # train_eval ends: its final model's detections, scored
    made = detect(*args, **kw)
    batch.write_detections(tiny_model, made[0], str(default), own, scored=True,
                           **batch.test_set_meta(tiny_model, 3))
    scores.write_text(json.dumps({k: [] for k in metrics.SCORES_KEYS}
                                 | {metrics.DETECTIONS_KEY: str(default)}))
    return made

  monkeypatch.setattr(batch, "detect", meanwhile)
  with pytest.raises(UserError, match=r"holds the detections its model's run scored, made "
                     r"otherwise \(the checkpoint of step 2 \(its step 3\)\)"):
    batch.localize_to_file(tiny_model)
  assert json.loads(default.read_text())["external_data"]["step"] == 3
  assert scores.exists() and "removed" not in caplog.text


def test_scores_of_detections_replaced_while_scored_are_not_written(tiny_model, tmp_path,
                                                                    monkeypatch):
  """Found by the trial: `evaluate` racing `localize` wrote scores naming the detections
  file, though they were of the file localize had just replaced."""
  dets, scores = tmp_path / "d.json", tmp_path / "d.eval.json"
  batch.localize_to_file(tiny_model, str(dets))
  gt = str(pathlib.Path(tiny_model.data.data_dir) / "gt.json")
  evaluate_files = metrics.evaluate_files

  def meanwhile(*args, **kw):  # localize replaces them (no scores there yet to remove)
    result = evaluate_files(*args, **kw)
    batch.localize_to_file(tiny_model, str(dets))
    return result

  monkeypatch.setattr(metrics, "evaluate_files", meanwhile)
  with pytest.raises(UserError, match=rf"^{re.escape(str(dets))}: changed or removed while "
                     r"it was scored: the scores above may not be of the file there now, and "
                     r"are not written; evaluate it again$"):
    metrics.evaluate_to_file(gt, str(dets), "test", (0.5,), (), show=lambda table: None)
  assert not scores.exists()
  monkeypatch.setattr(metrics, "evaluate_files", evaluate_files)
  metrics.evaluate_to_file(gt, str(dets), "test", (0.5,), (), show=lambda table: None)
  assert json.loads(scores.read_text())[metrics.DETECTIONS_KEY] == str(dets)


def test_a_restore_takes_the_next_latest_checkpoint_when_a_training_deletes_the_one_it_read(
    tiny_model, monkeypatch):
  """Found by the trial: `localize` alongside a training failed (3 of 5 runs, saving each
  step) when the training deleted the checkpoint it had found latest, before it read
  it; once followed by ~50 TensorFlow warnings of unrestored values."""
  folder = pathlib.Path(tiny_model.train.model_dir, checkpoints.CHECKPOINT_DIR)
  latest, answers = checkpoints.latest, []

  def rotating(model_dir):  # its first answer goes at once, as a training's save deletes
    # its oldest checkpoint
    answers.append(str(folder / "ckpt-1") if not answers else latest(model_dir))
    for f in folder.glob("ckpt-1.*"):
      f.unlink()
    return answers[-1]

  monkeypatch.setattr(checkpoints, "latest", rotating)
  model, _, prefix = checkpoints.restore_latest(tiny_model.train.model_dir)
  assert answers == [str(folder / "ckpt-1"), str(folder / "ckpt-2")] == [
      str(folder / "ckpt-1"), prefix]
  monkeypatch.setattr(checkpoints, "latest", latest)
  assert [w.numpy().tolist() for w in model.weights] == [
      w.numpy().tolist() for w in checkpoints.restore(tiny_model.train.model_dir)[0].weights]


def test_the_latest_checkpoint_is_the_next_one_when_a_training_deletes_the_one_named(
    tiny_model, monkeypatch):
  """(The same race, one step earlier: the state file read names a checkpoint a training
  has deleted since, having saved three more.)"""
  folder = pathlib.Path(tiny_model.train.model_dir, checkpoints.CHECKPOINT_DIR)
  for f in folder.glob("ckpt-1.*"):
    f.unlink()
  named, answers = checkpoints._named_latest, []  # pylint: disable=protected-access

  def saving(where):  # a training saves between the first reading and the next
    answers.append(str(folder / "ckpt-1") if not answers else named(where))
    return answers[-1]

  monkeypatch.setattr(checkpoints, "_named_latest", saving)
  assert checkpoints.latest(tiny_model.train.model_dir) == str(folder / "ckpt-2")
  monkeypatch.setattr(checkpoints, "_named_latest", lambda where: str(folder / "ckpt-1"))
  with pytest.raises(UserError, match=r"ckpt-1.index: not found, though .*checkpoint names it "
                     r"the latest checkpoint \(its files were deleted\?\)$"):
    checkpoints.latest(tiny_model.train.model_dir)


def test_a_folder_another_run_made_meanwhile_is_kept_and_named(tmp_path):
  """Found by the trial: of two make_synthetic runs at once, the second to finish failed
  with "cannot write (Directory not empty)"."""
  target = tmp_path / "data"
  with pytest.raises(UserError, match=rf"^{re.escape(str(target))}: made by another run "
                     r"meanwhile: that one is kept, this run's is discarded$"):
    with io_utils.atomic_dir(str(target)) as tmp:
      pathlib.Path(tmp, "mine").write_text("this run's")
      target.mkdir()
      (target / "theirs").write_text("the other run's")
  assert os.listdir(target) == ["theirs"] and os.listdir(tmp_path) == ["data"]


@pytest.mark.parametrize("fails", ["mkdtemp", "copyfile"])
def test_a_restore_without_room_for_its_copy_reads_the_checkpoint_itself(tiny_model, fails,
                                                                          tmp_path, monkeypatch):
  def full(*args, **kw):
    raise OSError(errno.ENOSPC, "No space left on device")

  def weights(model):
    return [w.numpy().tolist() for w in model.weights]

  expected = weights(checkpoints.restore(tiny_model.train.model_dir)[0])
  first = pathlib.Path(tiny_model.train.model_dir, checkpoints.CHECKPOINT_DIR, "ckpt-1")
  assert weights(checkpoints.restore(tiny_model.train.model_dir, str(first))[0]) != expected
  temporary = tmp_path / "tmp"
  temporary.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(temporary))
  monkeypatch.setattr(checkpoints.tempfile if fails == "mkdtemp" else checkpoints.shutil,
                      fails, full)
  model, _, prefix = checkpoints.restore_latest(tiny_model.train.model_dir)
  assert checkpoints.step_of(prefix) == 2 and weights(model) == expected
  assert not list(temporary.iterdir())  # (no partial copy kept)


def test_a_restores_copy_is_removed_on_ctrl_c_and_after_a_kill(tiny_model, tmp_path,
                                                              monkeypatch):
  """Found by a re-trial: Ctrl-C in localize left the checkpoint's copy in the temporary
  folder (the interrupt ends the process without the interpreter's shutdown); SIGKILL
  leaves one too. (A temporary folder shared by hosts: another's are not judged.)"""
  temporary = tmp_path / "tmp"
  temporary.mkdir()
  proc = subprocess.run(
      [sys.executable, "-c", "import os\nfrom wtal_tf import interrupts\n"
       "from wtal_tf.modeling import checkpoints\n"
       f"model = checkpoints.restore_latest({tiny_model.train.model_dir!r})[0]\n"
       "print(os.getpid(), *os.listdir(os.environ['TMPDIR']), flush=True)\n"
       "interrupts.interrupted()"],
      cwd=REPO, env={**ENV, "TMPDIR": str(temporary)}, capture_output=True, text=True,
      timeout=WAIT_SECONDS, check=False)
  assert proc.returncode == 130 and proc.stderr.endswith("error: interrupted\n")
  pid, *held = proc.stdout.split()
  host = socket.gethostname()
  assert len(held) == 1 and held[0].startswith(f"{checkpoints.COPY_PREFIX}{host}-{pid}-")
  assert not [p for p in temporary.iterdir() if p.name.startswith(checkpoints.COPY_PREFIX)]
  # One a killed process left (its pid gone) is removed by the next restore; a running
  # one's stays.
  gone = subprocess.Popen([sys.executable, "-c", "pass"])
  gone.wait()
  left, running, elsewhere = (temporary / f"{checkpoints.COPY_PREFIX}{on}-{by}-abc123"
                              for on, by in ((host, gone.pid), (host, os.getpid()),
                                             ("other-host", gone.pid)))
  for folder in (left, running, elsewhere):
    folder.mkdir()
    (folder / "ckpt-2.index").touch()
  monkeypatch.setattr(tempfile, "tempdir", str(temporary))
  checkpoints.restore_latest(tiny_model.train.model_dir)
  assert not left.exists() and running.exists() and elsewhere.exists()


def test_a_filesystem_without_locks_runs_unlocked_after_one_warning_each(tmp_path,
                                                                         monkeypatch, caplog):
  """(Review) Each hold warned again when taken again inside (train_eval, then train),
  and left its lock file, which kept a failed run's new model dir from being removed."""
  def refused(fd, operation):
    raise OSError(errno.ENOLCK, "No locks available")

  monkeypatch.setattr(locks.fcntl, "flock", refused)
  caplog.set_level("WARNING")
  held = tmp_path / "m"
  with locks.sole_writer(str(held), "training", "--model_dir"):
    with locks.sole_writer(str(held), "training", "--model_dir"):
      for _ in range(2):
        with locks.replacing_in(str(held)):
          with locks.replacing_in(str(held)):
            pass
  assert os.listdir(held) == []
  assert [r.getMessage() for r in caplog.records] == [
      f"{held / locks.LOCK_FILE}: cannot lock (No locks available): a second run training "
      "there is not refused",
      f"{held}: cannot lock (No locks available): two runs replacing the same file there at "
      "once are not kept apart"]


def test_a_hold_whose_holder_cannot_be_written_down_still_holds(tmp_path, monkeypatch):
  """(Review) A full disk when the lock file is written was a traceback."""
  def full(*args):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(locks.os, "pwrite", full)
  with locks.sole_writer(str(tmp_path), "training", "--model_dir"):
    other = subprocess.run(
        [sys.executable, "-c", "from wtal_tf import locks\n"
         f"with locks.sole_writer({str(tmp_path)!r}, 'training', '--model_dir'): pass"],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=WAIT_SECONDS, check=False)
  assert other.returncode == 1 and other.stderr.strip().endswith(
      f"UserError: {tmp_path}: another run is writing in it (another process): wait for it "
      "to end, or give another --model_dir")
