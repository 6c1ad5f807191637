"""Every shipped flagfile parses into a config; the STPN preset localizes like STPN."""

import dataclasses
import json
import subprocess
import sys

import pytest

from conftest import REPO, config_of_flagfile

PROBE = """
import json, sys
from wtal_tf import cli
cli.define_flags()
cli.FLAGS(["probe", *sys.argv[1:]])
c = cli.config_from_flags()
print(json.dumps({"losses": list(c.loss.losses), "cls_loss": c.loss.cls_loss,
                  "proposals": c.localize.for_model(c.loss.cls_loss).proposal_source,
                  "lr": c.train.learning_rate}))
"""


def resolved(*flagfiles):
  proc = subprocess.run([sys.executable, "-c", PROBE, *(f"--flagfile={f}" for f in flagfiles)],
                        cwd=REPO, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", ["synthetic", "thumos14", "activitynet13"])
def test_dataset_flagfiles_train_the_full_model(name):
  got = resolved(f"flags/{name}.cfg")
  assert got["losses"] == ["fg", "bg", "guide", "cluster"] and got["proposals"] == "attention"


def test_stpn_preset_after_a_dataset_flagfile():
  got = resolved("flags/thumos14.cfg", "flags/stpn.cfg")
  assert got == {"losses": ["fg", "sparse"], "cls_loss": "sigmoid", "proposals": "stpn",
                 "lr": 1e-4}


def test_stpn_multithreshold_preset_keeps_the_tcam_proposal_pool():
  got = resolved("flags/synthetic.cfg", "flags/stpn_multithreshold.cfg")
  assert got == {"losses": ["fg", "sparse"], "cls_loss": "sigmoid", "proposals": "tcam",
                 "lr": 1e-3}


def test_flag_reference_page_matches_the_definitions():
  proc = subprocess.run([sys.executable, "-m", "wtal_tf.tools.flags_table"], cwd=REPO,
                        capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.count("\n| `--") > 50  # every flag, one row each
  page = (REPO / "docs" / "flags.md").read_text()
  assert page == proc.stdout, ("docs/flags.md is stale: run "
                               "`python -m wtal_tf.tools.flags_table > docs/flags.md`")


def test_flag_reference_tool_takes_no_arguments(capsys):
  """It ignored them: `flags_table docs/flags.md` printed the page as if nothing was given."""
  from wtal_tf.tools import flags_table  # pylint: disable=import-outside-toplevel
  for args in (["docs/flags.md"], ["--output=x"]):
    with pytest.raises(SystemExit) as e:
      flags_table.main(["flags_table", *args])
    err = capsys.readouterr()
    assert e.value.code == 2 and err.out == "" and err.err == (
        f"error: no arguments are taken (got {args[0]}); usage: "
        "python -m wtal_tf.tools.flags_table > docs/flags.md\n")
  flags_table.main(["flags_table", "--help"])
  assert capsys.readouterr().out.startswith("Prints docs/flags.md")


def test_a_tools_own_flag_is_not_taken_for_a_config_field_of_the_same_name():
  from absl import flags  # pylint: disable=import-outside-toplevel
  from wtal_tf import cli  # pylint: disable=import-outside-toplevel
  fv = flags.FlagValues()
  flags.DEFINE_string("output_dir", "", "A tool's own folder.", flag_values=fv)
  cli.define_flags(("extract",), fv=fv)
  fv(["tool", "--output_dir=pictures", "--video_dir=videos"])
  assert "output_dir" not in cli.config_flags(fv) and "video_dir" in cli.config_flags(fv)
  cfg = cli.config_from_flags(fv=fv).extract
  assert (cfg.output_dir, cfg.video_dir) == ("", "videos")


def test_a_config_written_as_a_flagfile_reads_back_as_itself(tmp_path):
  """What an ablation run records as its flags.cfg (its row's config, not the flags)."""
  from wtal_tf import cli  # pylint: disable=import-outside-toplevel
  from wtal_tf import config as C  # pylint: disable=import-outside-toplevel
  cfg = C.Config().replace(
      data={"streams": ("rgb",), "extra_train": ("/v/a b", "/v/c,d"),
            "skip_invalid_videos": True},
      loss={"losses": ("fg", "sparse"), "cls_loss": "sigmoid", "alpha": 0.1 + 0.2},
      train={"learning_rate": 1e-5, "deterministic": False, "model_dir": "/runs/x"},
      localize={"proposal_source": "stpn", "attention_thresholds": (0.1, 0.123456789)})
  text = cli.config_flagfile(cfg)
  assert "--nodeterministic\n" in text and '--extra_train=/v/a b,"/v/c,d"\n' in text
  # It, an empty list (mv's row without extra videos) and the defaults read back.
  for given in (cfg, cfg.replace(data={"extra_train": ()}), C.Config()):
    (tmp_path / "flags.cfg").write_text(cli.config_flagfile(given))
    back = config_of_flagfile(tmp_path / "flags.cfg")
    for group in C.EXPERIMENT_GROUPS:  # (extract's fields are not experiment flags)
      assert getattr(back, group) == getattr(given, group), group


def test_a_run_records_its_paths_absolute_to_read_the_same_from_any_folder(
    tmp_path, monkeypatch):
  """flags.cfg of a run given relative paths, used as --flagfile from another folder."""
  from wtal_tf import cli  # pylint: disable=import-outside-toplevel
  from wtal_tf import config as C  # pylint: disable=import-outside-toplevel
  monkeypatch.chdir(tmp_path)
  paths = {"data_dir": "data/x", "gt_file": "gt.json", "class_list": "classes.txt",
           "extra_train": ("own", "more/b")}
  cfg = C.Config().replace(data=paths, train={"model_dir": "runs/x"})
  (tmp_path / "flags.cfg").write_text(cli.config_flagfile(cfg))
  (tmp_path / "elsewhere").mkdir()
  monkeypatch.chdir(tmp_path / "elsewhere")
  back = config_of_flagfile(tmp_path / "flags.cfg")
  assert dataclasses.replace(back.data, **paths) == cfg.data  # the other fields as given
  assert (back.data.data_dir, back.data.gt_file, back.data.class_list, back.data.extra_train,
          back.train.model_dir) == (
      f"{tmp_path}/data/x", f"{tmp_path}/gt.json", f"{tmp_path}/classes.txt",
      (f"{tmp_path}/own", f"{tmp_path}/more/b"), f"{tmp_path}/runs/x")
  # Unset paths stay unset (their defaults: DATA_DIR/gt.json, the labels' classes).
  assert "--gt_file=\n" in cli.config_flagfile(C.Config())


def test_a_config_made_in_python_keeps_the_bounds_and_choices_of_its_flags():
  from wtal_tf import config as C  # pylint: disable=import-outside-toplevel
  checked = 0
  for group in dataclasses.fields(C.Config):
    for field in dataclasses.fields(group.type):
      meta, default = field.metadata, field.default
      wrong = []
      if meta.get("lower") is not None:
        wrong.append(meta["lower"] - 1)
      if meta.get("upper") is not None:
        wrong.append(meta["upper"] + 1)
      if meta.get("choices"):
        wrong.append(("nonesuch",) if isinstance(default, tuple) else "nonesuch")
      for value in wrong:
        if isinstance(default, float):
          value = float(value)
        with pytest.raises(ValueError, match=f"^--{field.name}"):
          group.type(**{field.name: value})
        checked += 1
  assert checked > 25  # every bounded field of every group
  # Lists where tuples are declared are taken, as tuples (review: refused); NaN is not.
  assert C.DataConfig(streams=["rgb"]).streams == ("rgb",)
  assert C.LossConfig(losses=["fg", "bg"]).losses == ("fg", "bg")
  with pytest.raises(ValueError, match="^--alpha=nan: not a number$"):
    C.LossConfig(alpha=float("nan"))


@pytest.mark.parametrize("tool, row", [
    ("evaluate", "| `--output` |  | Scores JSON"),
    ("visualize", "| `--output_dir` |  | Where the PNG files go."),
    ("tools.make_synthetic", "| `--output_dir` |  | The dataset folder written")])
def test_the_flag_page_lists_a_tools_own_flag_named_like_a_config_field(tool, row):
  from wtal_tf.tools import flags_table  # pylint: disable=import-outside-toplevel
  assert row in flags_table.tool_table(tool)
