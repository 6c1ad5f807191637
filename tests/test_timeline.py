"""Timeline pictures: size, sensitivity to the attention, edge cases. No pixel goldens."""

from matplotlib import cbook
import numpy as np
import pytest

from wtal_tf.data import groundtruth
from wtal_tf.localization.localize import localize
from wtal_tf.viz import plotting
from wtal_tf.viz import timeline
from wtal_tf.config import LocalizeConfig
from wtal_tf.localization.outputs import StreamOutput

CLASSES = ("A", "B", "C")


def outputs(t, seed=0, streams=("rgb", "flow"), attention=None):
  rng = np.random.default_rng(seed)
  return {s: StreamOutput(rng.random(t) if attention is None else attention,
                          rng.normal(size=(t, 4)), np.array([0.7, 0.2, 0.05]))
          for s in streams}


def image(outs, gt=None, panels=1, source="attention"):
  cfg = LocalizeConfig(proposal_source=source)
  panel = timeline.Panel("m", outs, localize(outs, cfg), cfg)
  return plotting.to_array(timeline.render([panel] * panels, CLASSES, 0.64, gt=gt))


GT = groundtruth.GTVideo("v", "test", 40.0, (groundtruth.Instance("A", 1.0, 5.5),
                                            groundtruth.Instance("B", 20.0, 31.0)))


def test_size_and_panels():
  one = image(outputs(50), GT)
  assert one.shape == (int(timeline.PANEL_HEIGHT_IN * 100), int(timeline.WIDTH_IN * 100), 3)
  two = image(outputs(50), GT, panels=2)
  assert two.shape[0] == 2 * one.shape[0] and two.shape[1] == one.shape[1]


def test_differs_when_attention_differs():
  t = 50
  flat = image(outputs(t, attention=np.full(t, 0.2)), GT)
  peaked = image(outputs(t, attention=np.where(np.arange(t) % 10 < 3, 0.9, 0.1)), GT)
  same = image(outputs(t, attention=np.full(t, 0.2)), GT)
  assert np.array_equal(flat, same)
  assert (flat != peaked).any(axis=-1).mean() > 0.001


def test_stpn_panel_draws_the_signal_its_proposals_threshold():
  """Same detections, only the proposal source differs: a T-CAM-proposal panel draws
  λ·σ(T-CAM) where an attention panel draws λ·(w·x)."""
  outs = outputs(50)
  dets = localize(outs, LocalizeConfig(proposal_source="attention"))
  img = {source: plotting.to_array(timeline.render(
             [timeline.Panel("m", outs, dets, LocalizeConfig(proposal_source=source))],
             CLASSES, 0.64, gt=GT)) for source in ("attention", "tcam", "stpn")}
  assert (img["attention"] != img["tcam"]).any(axis=-1).mean() > 0.001
  assert (img["stpn"] != img["tcam"]).any(axis=-1).mean() > 0.001


@pytest.mark.parametrize("t,streams,gt", [(37, ("rgb",), None), (6000, ("rgb", "flow"), GT),
                                          (1, ("flow",), None)])
@pytest.mark.parametrize("source", ["attention", "tcam", "stpn"])
def test_edge_cases_render(t, streams, gt, source):
  img = image(outputs(t, streams=streams), gt, source=source)
  assert img.shape[1] == int(timeline.WIDTH_IN * 100) and img.std() > 0


def test_visualize_cli_draws_two_models(small_synthetic, tmp_path):
  import os
  import subprocess
  import sys
  from conftest import REPO
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
  common = [f"--data_dir={small_synthetic}", "--attention_units=8", "--num_vis_videos=1"]
  for name, extra in (("ours", []), ("stpn", ["--flagfile=flags/stpn.cfg"])):
    subprocess.run([sys.executable, "-m", "wtal_tf.train", "--train_steps=5", *common, *extra,
                    f"--model_dir={tmp_path / name}"], check=True, cwd=REPO, env=env,
                   capture_output=True)
  proc = subprocess.run([sys.executable, "-m", "wtal_tf.visualize", *common,
                         f"--model_dir={tmp_path / 'ours'}",
                         f"--compare_model_dir={tmp_path / 'stpn'}", "--num_videos=2",
                         f"--output_dir={tmp_path / 'png'}"], cwd=REPO, env=env,
                        capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  pngs = sorted(os.listdir(tmp_path / "png"))
  assert len(pngs) == 2 and all(p.endswith(".png") for p in pngs)
  import matplotlib.image
  img = matplotlib.image.imread(str(tmp_path / "png" / pngs[0]))
  assert img.shape[0] == int(2 * timeline.PANEL_HEIGHT_IN * 100)
  bad = subprocess.run([sys.executable, "-m", "wtal_tf.visualize", *common,
                        f"--model_dir={tmp_path / 'ours'}", "--videos=nope",
                        f"--output_dir={tmp_path / 'png'}"], cwd=REPO, env=env,
                       capture_output=True, text=True)
  assert bad.returncode == 2 and "not in the test subset" in bad.stderr


def test_twenty_detected_classes_draw_the_most_probable_without_a_layout_warning():
  """STPN-like outputs: every class detected (20 legend rows did not fit a panel, and
  matplotlib warned 'Tight layout not applied')."""
  import warnings  # pylint: disable=import-outside-toplevel
  classes = tuple(f"Class{k:02d}" for k in range(20))
  rng = np.random.default_rng(0)
  probs = np.linspace(0.9, 0.3, 20)
  outs = {s: StreamOutput(rng.random(300), rng.normal(size=(300, 21)), probs)
          for s in ("rgb", "flow")}
  cfg = LocalizeConfig(proposal_source="stpn", class_threshold=0.0)
  dets = localize(outs, cfg)
  assert len(set(dets.classes.tolist())) > timeline.MAX_CLASSES_DRAWN
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    fig = timeline.render([timeline.Panel("m", outs, dets, cfg)], classes, 0.64)
    plotting.to_array(fig)
  title = fig.axes[0].get_title(loc="left")
  assert title.startswith(f"m (the {timeline.MAX_CLASSES_DRAWN} most probable of ")
  labels = fig.axes[2].get_legend_handles_labels()[1]
  assert [l for l in labels if l.endswith("rgb (p=0.90)")] == ["Class00 rgb (p=0.90)"]
  assert len([l for l in labels if " rgb " in l]) == timeline.MAX_CLASSES_DRAWN


def test_stpn_curves_are_each_streams_own_proposal_classes_with_its_own_p():
  """Found by a new user: each stream's curve was labelled with the fused probability,
  and drawn for a class the stream makes no proposal of (its p below the threshold)."""
  rng = np.random.default_rng(0)
  probs = {"rgb": np.array([0.6, 0.24, 0.05]), "flow": np.array([0.4, 0.03, 0.05])}
  outs = {s: StreamOutput(rng.random(60), rng.normal(size=(60, 4)), p) for s, p in probs.items()}
  cfg = LocalizeConfig(proposal_source="stpn")
  dets = localize(outs, cfg)
  assert set(dets.classes.tolist()) == {0, 1}
  fig = timeline.render([timeline.Panel("m", outs, dets, cfg)], CLASSES, 0.64)
  assert sorted(fig.axes[2].get_legend_handles_labels()[1]) == [
      "A flow (p=0.40)", "A rgb (p=0.60)", "B rgb (p=0.24)", "cut"]


@pytest.mark.parametrize("t", [1, 2])
def test_a_one_segment_videos_curves_are_drawn_as_points(t):
  """Found by a researcher: a video of one segment had empty attention and T-CAM panels
  (a line through one point draws nothing)."""
  outs = outputs(t)
  cfg = LocalizeConfig(proposal_source="attention")
  fig = timeline.render([timeline.Panel("m", outs, localize(outs, cfg), cfg)], CLASSES, 0.64)
  curves = [line for ax in fig.axes[1:3] for line in ax.get_lines()
            if len(line.get_xdata()) == t]
  assert len(curves) >= 4  # λ rgb, flow, fused, and at least one class's weighted T-CAM
  assert {line.get_marker() for line in curves} == ({"o"} if t == 1 else {"None"})


def test_dollar_signs_in_names_are_drawn_as_written():
  """A video named `price_$10_to_$20` made matplotlib parse maths and fail to draw."""
  cfg = LocalizeConfig(proposal_source="attention")
  outs = outputs(40)
  classes = ("cost $5^ vs $10", "B", "C")
  gt = groundtruth.GTVideo("v", "test", 40.0, (groundtruth.Instance(classes[0], 1.0, 5.5),))
  fig = timeline.render([timeline.Panel("price_$10_to_$20", outs, localize(outs, cfg), cfg)],
                        classes, 0.64, gt=gt)
  plotting.to_array(fig)  # draws
  texts = [fig.axes[0].get_title(loc="left"), fig.axes[0].get_yticklabels()[0].get_text(),
           *fig.axes[2].get_legend_handles_labels()[1]]
  assert texts[0].startswith(r"price_\$10_to_\$20") and classes[0].replace("$", r"\$") in texts[1]
  assert not any(cbook.is_math_text(t) for t in texts)


def test_names_the_font_lacks_are_drawn_without_warnings(tmp_path):
  """Found by a new user: a video named in Japanese made matplotlib print a multi-line
  warning per character on stderr."""
  import warnings  # pylint: disable=import-outside-toplevel
  cfg = LocalizeConfig(proposal_source="attention")
  outs = outputs(40)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    fig = timeline.render([timeline.Panel("動画_ビデオ", outs, localize(outs, cfg), cfg)],
                          ("A", "B", "C"), 0.64)
    plotting.save_png(fig, str(tmp_path / "t.png"))
    plotting.to_array(fig)
  assert not [w for w in caught if "missing from font" in str(w.message)]
  assert (tmp_path / "t.png").stat().st_size > 1000


def test_the_axis_reaches_the_videos_end_and_detections_keep_headroom():
  """Found by a new user: the time axis ended at the last whole segment (cutting the
  ground truth off), and one detection's bar, autoscaled, filled its whole row."""
  outs = outputs(50)  # 50 segments = 32 s; the ground truth says 40 s
  cfg = LocalizeConfig(proposal_source="attention")
  dets = localize(outs, cfg)
  fig = timeline.render([timeline.Panel("m", outs, dets, cfg)], CLASSES, 0.64, gt=GT)
  assert fig.axes[-1].get_xlim() == (0.0, 40.0)
  bars = np.array([[v[:, 1].min(), v[:, 1].max()] for c in fig.axes[-1].collections
                   for v in [c.get_paths()[0].vertices]])
  bottom, top = fig.axes[-1].get_ylim()
  assert len(bars) and bars[:, 0].min() < 0  # (Eq 12 scores may be negative: review)
  assert bottom <= bars[:, 0].min() and bars[:, 1].max() < top  # every bar in view
  assert top - bars[:, 1].max() > 0.05 * (top - bottom)  # with headroom above the highest
  fig = timeline.render([timeline.Panel("m", outs, dets, cfg)], CLASSES, 0.64, duration=33.0)
  assert fig.axes[-1].get_xlim() == (0.0, 33.0)
