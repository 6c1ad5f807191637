"""The house by stage (#19): flags generated from the config fields, tool flags kept to
their tools, one scoring pass in train_eval, raw outputs saved by localize, and
evaluate --output."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from absl import flags

from conftest import REPO, shared_path, tiny_config, write_dataset
from wtal_tf import cli
from wtal_tf import config as C
from wtal_tf.data import datasets as data
from wtal_tf.inference import batch
from wtal_tf.inference.predictor import load_predictor
from wtal_tf.training import train_eval
from wtal_tf.training import trainer

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def run_cli(*args):
  return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=REPO,
                        env=ENV)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  root = tmp_path_factory.mktemp("house")
  data_dir = write_dataset(root / "d", {"a": (["A", "B"], 6), "b": (["C"], 5)},
                           {"t1": (["A"], 7), "t2": (["C", "B"], 4)})
  cfg = tiny_config(data_dir, root / "m")
  trainer.train(cfg)
  return cfg


def test_every_config_field_is_one_flag_with_its_default_help_and_bounds():
  fv = flags.FlagValues()
  cli.define_flags(tuple(C.GROUPS), fv=fv)
  for group, cls in C.GROUPS.items():
    for field in dataclasses.fields(cls):
      if not field.metadata["flag"]:
        assert field.name not in fv
        continue
      flag = fv[field.name]
      assert field.metadata["help"] and field.metadata["help"] in flag.help, field.name
      default = field.default
      if isinstance(default, tuple):
        default = [f"{v:g}" if isinstance(v, float) else v for v in default]
      assert flag.default == default, (group, field.name)
  for bad in ("--train_steps=-1", "--theta=1.5", "--layout=other", "--streams=rgb,depth"):
    fresh = flags.FlagValues()
    cli.define_flags(tuple(C.GROUPS), fv=fresh)
    with pytest.raises(flags.Error):  # bounds and choices come from the field
      fresh(["prog", bad])


def test_flags_parse_back_into_the_same_config():
  fv = flags.FlagValues()
  cli.define_flags(tuple(C.GROUPS), fv=fv)
  fv(["prog", "--losses=fg,sparse,fg", "--attention_thresholds=0.1,0.3", "--theta=0.25",
      "--random_init_seed=4", "--extra_train=x,y"])
  cfg = cli.config_from_flags(("--runner=DirectRunner",), fv=fv)
  assert cfg.loss.losses == ("fg", "sparse")  # each choice once
  assert cfg.localize.attention_thresholds == (0.1, 0.3)
  assert cfg.localize.theta == 0.25 and cfg.extract.random_init_seed == 4
  assert cfg.data.extra_train == ("x", "y")
  assert cfg.extract.pipeline_args == ("--runner=DirectRunner",)
  unparsed = cli.config_from_flags(fv=flags.FlagValues())  # no flags defined: all defaults
  assert unparsed == C.Config()


def test_tool_flags_stay_with_their_tools():
  proc = run_cli("wtal_tf.train", "--helpfull")
  assert proc.returncode == 0
  help_text = proc.stdout
  assert "--train_steps:" in help_text
  for tool_flag in ("videos", "val_annotations", "gt", "per_class", "video_dir",
                    "ablation_rows", "num_microvideos"):
    assert f"--{tool_flag}:" not in help_text, tool_flag
  assert "--videos:" in run_cli("wtal_tf.visualize", "--helpfull").stdout


def test_help_lists_every_flag_of_the_command_and_keeps_the_usage_lines():
  proc = run_cli("wtal_tf.extract", "--help")
  assert proc.returncode == 0  # (absl exits 1: `extract --help && ...` failed)
  assert run_cli("wtal_tf.evaluate", "-helpshort").returncode == 0  # (absl's one dash)
  extract = proc.stdout
  assert "--video_dir:" in extract and "--chunk_segments:" in extract
  assert "--train_steps:" not in extract  # not an extract flag
  evaluate = run_cli("wtal_tf.evaluate", "--help").stdout
  assert "--gt:" in evaluate and "--theta:" in evaluate
  assert "\n    [--output=SCORES.json]\n" in evaluate  # the usage's second line
  assert run_cli("wtal_tf.evaluate", "-h").stdout == evaluate
  assert "--output:" in run_cli("wtal_tf.localize", "--help").stdout  # defined by cli
  assert "--[no]per_class:" in run_cli("wtal_tf.pipeline", "--help").stdout  # train_eval's


def test_flags_cfg_holds_only_experiment_flags(small_synthetic, tmp_path):
  model_dir = tmp_path / "m"
  proc = run_cli("wtal_tf.train_eval", "--flagfile=flags/synthetic.cfg",
                 f"--data_dir={small_synthetic}", f"--model_dir={model_dir}",
                 "--train_steps=3", "--eval_every=0", "--num_vis_videos=0",
                 "--attention_units=4", "--per_class")
  assert proc.returncode == 0, proc.stderr[-2000:]
  saved = {line.split("=")[0] for line in (model_dir / "flags.cfg").read_text().split()}
  expected = {f"--{n}" for n in cli.flag_fields(C.EXPERIMENT_GROUPS)}
  booleans = {f"--no{n[2:]}" for n in expected}
  assert saved and saved <= expected | booleans
  assert "--per_class" not in saved and "--nodeterministic" not in saved
  # wtal_tf's progress lines are shown; TensorFlow's own INFO lines (one per checkpoint
  # saved) only with --verbosity=1.
  assert "trainer.py:" in proc.stderr and "step 3: loss" in proc.stderr
  assert "Sharding callback" not in proc.stderr and "functional_saver" not in proc.stderr


def test_an_ablation_run_records_its_rows_flags(small_synthetic, tmp_path):
  """The entrypoint gives ablation.run its flag writer: the STPN row's run records STPN's
  losses and proposals, not the base flagfile's."""
  out = tmp_path / "ablation"
  proc = run_cli("wtal_tf.ablation", "--flagfile=flags/synthetic.cfg",
                 f"--data_dir={small_synthetic}", f"--model_dir={out}", "--ablation_rows=stpn",
                 "--train_steps=2", "--eval_every=0", "--num_vis_videos=0",
                 "--attention_units=4")
  assert proc.returncode == 0, proc.stderr[-2000:]
  recorded = (out / "lfg_lsparse_stpn" / "seed0" / "flags.cfg").read_text().splitlines()
  assert {"--losses=fg,sparse", "--cls_loss=sigmoid", "--proposal_source=stpn",
          "--attention_units=4", f"--model_dir={out / 'lfg_lsparse_stpn' / 'seed0'}"} <= set(
              recorded)


def test_train_eval_localizes_and_scores_the_test_set_once(trained, tmp_path, monkeypatch):
  calls = []
  real = batch.detect

  def counting(*args, **kwargs):
    calls.append(len(args[1]))
    return real(*args, **kwargs)

  monkeypatch.setattr(batch, "detect", counting)
  cfg = trained.replace(train={"model_dir": str(tmp_path / "m2")})
  report = train_eval.train_and_evaluate(cfg)
  assert calls == [2]  # one pass over the two test videos
  detections = json.loads((tmp_path / "m2" / "detections_test.json").read_text())
  assert set(detections["results"]) == {"t1", "t2"}
  scores = json.loads((tmp_path / "m2" / "detections_test.eval.json").read_text())
  assert f"{scores['mAP']['0.5'] * 100:.2f}" in report
  # The same numbers as localizing again with the reloaded model.
  again = json.loads(open(batch.localize_to_file(cfg, str(tmp_path / "again.json"))[0]).read())
  assert again["results"] == detections["results"]
  # It records how it was made, and that the run scored it: localize keeps it from
  # detections of another localization (test_bad_input), and replaces it alike.
  assert detections["external_data"]["scored_by_its_run"] is True
  assert detections["external_data"]["localize"] == again["external_data"]["localize"]
  batch.localize_to_file(cfg)


def test_localize_saves_each_videos_raw_outputs(trained, tmp_path):
  out = tmp_path / "outputs"
  proc = run_cli("wtal_tf.localize", f"--data_dir={trained.data.data_dir}",
                 f"--model_dir={trained.train.model_dir}", "--attention_units=8",
                 f"--output={tmp_path / 'd.json'}", f"--save_outputs={out}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert sorted(os.listdir(out)) == ["t1.npz", "t2.npz"]
  predict = load_predictor(trained.train.model_dir, trained.localize)
  videos = {v.name: v for v in data.load_dataset(trained.data, include_train=False).test}
  for name, length in (("t1", 7), ("t2", 4)):
    saved = np.load(out / f"{name}.npz")
    assert list(saved["classes"]) == ["A", "B", "C"]
    expected = predict(videos[name].load(predict.streams))
    for s in ("rgb", "flow"):
      assert saved[f"{s}_attention"].shape == (length,)
      assert saved[f"{s}_tcam"].shape == (length, 4)
      assert saved[f"{s}_class_probs"].shape == (3,)
      np.testing.assert_allclose(saved[f"{s}_attention"], expected[s].attention, rtol=1e-6)
      np.testing.assert_allclose(saved[f"{s}_tcam"], expected[s].cas, rtol=1e-6)
      np.testing.assert_allclose(saved[f"{s}_class_probs"], expected[s].class_probs, rtol=1e-6)


def reference_detections(tmp_path):
  dets = tmp_path / "in" / "results.json"
  dets.parent.mkdir()
  shutil.copy(shared_path("stpn_reference", "results.json"), dets)
  return shared_path("stpn_reference", "gt.json"), dets


def test_evaluate_output_flag_writes_there(tmp_path):
  gt, dets = reference_detections(tmp_path)
  proc = run_cli("wtal_tf.evaluate", f"--gt={gt}", f"--detections={dets}",
                 f"--output={tmp_path / 'scores' / 's.json'}")
  assert proc.returncode == 0, proc.stderr
  assert round(json.loads((tmp_path / "scores" / "s.json").read_text())["mAP"]["0.5"] * 100,
               2) == 17.70
  assert not (tmp_path / "in" / "results.eval.json").exists()


def write_wtalc_annotations(root, videos):
  """W-TALC's annotation arrays (as it ships them: bytes names, object arrays) for
  videos {name: (subset, duration_s, [(label, start_s, end_s), ...])}."""
  ann = root / data.WTALC_ANNOTATIONS
  ann.mkdir(parents=True)

  def objects(items):
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array
  arrays = {"videoname": np.array([n.encode() for n in videos]),
            "subset": np.array([v[0].encode() for v in videos.values()]),
            "duration": np.array([[v[1]] for v in videos.values()]),
            "segments": objects([[[s, e] for _, s, e in v[2]] for v in videos.values()]),
            "labels": objects([[l for l, _, _ in v[2]] for v in videos.values()]),
            "classlist": np.array([b"A", b"B"])}
  for name, array in arrays.items():
    np.save(ann / f"{name}.npy", array, allow_pickle=True)


def test_evaluate_reads_the_ground_truth_of_the_dataset_flags(tmp_path):
  """Found by a researcher: evaluate accepts the experiment flags ("one flagfile serves
  them all") but required --gt, so detections on a W-TALC dataset (no gt.json) could not
  be scored, and `--flagfile=MODEL_DIR/flags.cfg` did not name the ground truth."""
  wtalc = tmp_path / "wtalc"
  write_wtalc_annotations(wtalc, {"t1": ("test", 10.0, [("A", 1.0, 3.0)]),
                                  "t2": ("test", 10.0, [("B", 4.0, 6.0)]),
                                  "v1": ("validation", 10.0, [("A", 0.0, 2.0)])})
  dets = tmp_path / "dets.json"
  dets.write_text(json.dumps({"results": {
      "t1": [{"label": "A", "score": 0.9, "segment": [1.0, 3.0]}],
      "t2": [{"label": "B", "score": 0.8, "segment": [8.0, 9.0]}]}}))
  proc = run_cli("wtal_tf.evaluate", f"--data_dir={wtalc}", "--layout=wtalc",
                 f"--detections={dets}", "--tiou=0.5")
  assert proc.returncode == 0, proc.stderr
  assert json.loads((tmp_path / "dets.eval.json").read_text())["mAP"] == {"0.5": 0.5}
  root = write_dataset(tmp_path / "pv", {"a": (["A"], 4)}, {"x": (["A"], 5)}, classes=("A",))
  (tmp_path / "classes.txt").write_text("A\nZ\n")  # Z: a class without instances (review)
  (tmp_path / "flags.cfg").write_text(f"--data_dir={root}\n"
                                      f"--class_list={tmp_path / 'classes.txt'}\n")
  dets.write_text(json.dumps({"results": {"x": [
      {"label": "A", "score": 1.0, "segment": [0.0, 0.64]},
      {"label": "Z", "score": 0.5, "segment": [0.0, 0.64]}]}}))
  proc = run_cli("wtal_tf.evaluate", f"--flagfile={tmp_path / 'flags.cfg'}",
                 f"--detections={dets}", "--tiou=0.5")
  assert proc.returncode == 0, proc.stderr
  assert json.loads((tmp_path / "dets.eval.json").read_text())["mAP"] == {"0.5": 1.0}
  proc = run_cli("wtal_tf.evaluate", f"--detections={dets}")
  assert (proc.returncode, proc.stderr) == (
      2, "error: --gt (or the dataset's --data_dir) is required\n")
  (tmp_path / "flags.cfg").write_text(f"--data_dir={root}\n--tiou=activitynet\n")
  document = json.loads(dets.read_text())
  dets.write_text(json.dumps({**document, "external_data": {"model_dir": str(tmp_path)}}))
  for tiou, warned in (([], True), (["--tiou=0.5"], False)):  # (a flag chose: no warning)
    proc = run_cli("wtal_tf.evaluate", f"--data_dir={root}", f"--detections={dets}",
                   f"--class_list={tmp_path / 'classes.txt'}", *tiou)
    assert proc.returncode == 0, proc.stderr
    assert ("its model was evaluated at --tiou=activitynet" in proc.stderr) == warned


def test_evaluate_unwritable_default_location_is_a_warning(tmp_path):
  gt, dets = reference_detections(tmp_path)
  (tmp_path / "in" / "results.eval.json").mkdir()  # cannot be replaced by a file, even by root
  proc = run_cli("wtal_tf.evaluate", f"--gt={gt}", f"--detections={dets}")
  assert proc.returncode == 0 and "Traceback" not in proc.stderr
  assert "17.70" in proc.stdout  # the table is still printed
  warnings = [l for l in proc.stderr.splitlines() if l.startswith("warning:")]
  assert len(warnings) == 1 and str(tmp_path / "in" / "results.eval.json") in warnings[0]


def test_evaluate_default_location_that_is_the_ground_truth_is_left_alone(tmp_path):
  """Found by a new user: a ground truth named <detections>.eval.json was replaced by the
  scores, exit 0 (an explicit --output there was refused)."""
  gt, dets = reference_detections(tmp_path)
  there = tmp_path / "in" / "results.eval.json"
  shutil.copy(gt, there)
  before = there.read_bytes()
  proc = run_cli("wtal_tf.evaluate", f"--gt={there}", f"--detections={dets}")
  assert proc.returncode == 0 and "Traceback" not in proc.stderr
  assert "17.70" in proc.stdout and there.read_bytes() == before
  assert [l for l in proc.stderr.splitlines() if l.startswith("warning:")] == [
      f"warning: {there}: cannot write the scores file (it is the ground truth of --gt); "
      "pass --output=FILE to keep them"]


def test_evaluate_unwritable_output_is_an_error_before_any_work(tmp_path):
  (tmp_path / "file").write_text("x")
  bad = tmp_path / "file" / "s.json"  # below a file: cannot be written
  proc = run_cli("wtal_tf.evaluate", f"--gt={tmp_path / 'missing.json'}",
                 f"--detections={tmp_path / 'missing_too.json'}", f"--output={bad}")
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert proc.stderr.strip().splitlines() == [
      f"error: {bad}: cannot write the scores file ({tmp_path / 'file'} is not a folder)"]
