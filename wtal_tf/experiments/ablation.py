"""STPN and the rows of the paper's Table 1, trained and evaluated under one config.

Every row is its own training run (OUT/<row>/seed<s>, s = --seed + k) with the
same data, steps and seeds, unless its training repeats an earlier row's (then it
evaluates that row's models); the table holds mean ± std over seeds of the final
mAP. Each row sets its losses, classification loss and proposal source, so
base flags for those do not leak into it.
"""

import contextlib
import csv
import dataclasses
import io
import os
import re
from typing import Callable, Optional

from absl import logging
import numpy as np

from wtal_tf import io_utils
from wtal_tf.config import Config
from wtal_tf.data import datasets as data
from wtal_tf.errors import UserError
from wtal_tf.evaluation import metrics
from wtal_tf.inference.predictor import load_predictor
from wtal_tf.training import trainer as training
from wtal_tf.viz import plotting


@dataclasses.dataclass(frozen=True)
class Row:
  """One table row: a name and its overrides of the base config's groups."""
  name: str
  loss: dict = dataclasses.field(default_factory=dict)
  localize: dict = dataclasses.field(default_factory=dict)
  data: dict = dataclasses.field(default_factory=dict)


def seed_model_row(name: str, losses: tuple[str, ...]) -> Row:
  """A row of the seed paper's model: softmax over C+1 and attention proposals."""
  return Row(name, {"losses": losses, "cls_loss": "softmax"},
             {"proposal_source": "attention"})


def stpn_row(name: str, losses: tuple[str, ...], proposal_source: str = "stpn") -> Row:
  """An STPN row: sigmoid loss averaged over classes, STPN's post-processing by default."""
  return Row(name, {"losses": losses, "cls_loss": "sigmoid"},
             {"proposal_source": proposal_source})


# The paper's Table 1, in its order: the first two rows are STPN without and
# with its sparsity loss (Table 1 says they are obtained from STPN).
STPN = stpn_row("Lfg+Lsparse (STPN)", ("fg", "sparse"))
FULL = seed_model_row("Lfg+Lbg+Lguide+Lcluster", ("fg", "bg", "guide", "cluster"))
PAPER_ROWS = (
    stpn_row("Lfg", ("fg",)),
    STPN,
    seed_model_row("Lfg+Lguide", ("fg", "guide")),
    seed_model_row("Lfg+Lbg", ("fg", "bg")),
    seed_model_row("Lfg+Lbg+Lguide", ("fg", "bg", "guide")),
    seed_model_row("Lfg+Lbg+Lcluster", ("fg", "bg", "cluster")),
    seed_model_row("Lfg+Lguide+Lcluster", ("fg", "guide", "cluster")),
    FULL,
)
# Not in Table 1: the seed model with Lfg alone, and STPN's training with the
# seed paper's proposal pool (flags/stpn_multithreshold.cfg).
EXTRA_ROWS = (
    seed_model_row("Lfg (softmax, attention proposals)", ("fg",)),
    stpn_row("STPN, multi-threshold T-CAM proposals", ("fg", "sparse"), "tcam"),
)
ROWS = PAPER_ROWS + EXTRA_ROWS
CURVE_ROWS = (STPN.name, FULL.name)
CURVE_SIZE_IN = (6.5, 3.6)  # the curve's figure, width and height in inches
STPN_ALIAS = "stpn"


@dataclasses.dataclass
class RowResult:
  name: str
  run_dirs: list  # one model dir per seed
  values: np.ndarray  # [seeds, columns] in %
  histories: list  # per seed: [(step, mAP per tIoU)]
  evals: list  # per seed: the final EvalResult


Notes = Callable[[list[RowResult]], str]  # more Markdown below a table, from its rows


def slug(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()


def columns(cfg: Config) -> list[str]:
  return [f"{t:g}" for t in cfg.eval.thresholds] + [n for n, _, _ in cfg.eval.averages]


def run(cfg: Config, seeds: int, rows=ROWS, prefix: str = "ablation", *,
        flagfile: Callable[[Config], str],
        notes: Optional[Notes] = None) -> list[RowResult]:
  """Trains and evaluates every row for `seeds` seeds; writes the table (with
  `notes(results)`'s Markdown after it, if given) and the curve (written_files).

  Every row and seed is a separate run in OUT/<row>/seed<s>, seeded
  s = cfg.train.seed + k, on the same data and steps, which records its config's
  experiment flags, `flagfile(config)` ("": none), as its flags.cfg. A row whose
  training is the same as another's (same losses, model and data; e.g. STPN with the
  multi-threshold proposals) evaluates that row's model instead of training a copy:
  the model of the first such row of ROWS (of `rows`, for rows not in ROWS), trained in
  that row's folder whether or not the row is run, and found there by a later run; its
  run_dirs then name that folder (whose flags.cfg is that row's). Every row's data is
  read and checked before the first training (a bad one fails at once).
  """
  out = cfg.train.model_dir
  keys = [tuple(sorted((k, str(v)) for k, v in row.data.items())) for row in rows]
  datasets = {}
  for row, key in zip(rows, keys):
    if key not in datasets:
      row_data = cfg.replace(data=row.data).data
      datasets[key] = data.check_test_videos(data.load_dataset(row_data), row_data.test_subset,
                                             scored=True)

  def run_config(row: Row, seed: int) -> Config:
    return cfg.replace(loss=row.loss, localize=row.localize, data=row.data,
                       train={"model_dir": os.path.join(out, slug(row.name), f"seed{seed}"),
                              "seed": seed})

  def training_of(c: Config):
    return c.loss, c.model, c.data, dataclasses.replace(c.train, model_dir="")

  trained, results = set(), []
  for row, key in zip(rows, keys):
    result_row = RowResult(row.name, [], [], [], [])
    for k in range(seeds):
      seed = cfg.train.seed + k
      row_cfg = run_config(row, seed)
      owner = next(r for r in (ROWS if row in ROWS else rows)
                   if training_of(run_config(r, seed)) == training_of(row_cfg))
      owner_cfg = run_config(owner, seed)
      run_dir = owner_cfg.train.model_dir
      if owner == row:
        logging.info("%s: %s, seed %d -> %s", prefix, row.name, seed, run_dir)
        result = training.train(row_cfg, datasets[key], flags_text=flagfile(row_cfg))
      else:
        if run_dir not in trained:  # (resumed, or found finished, if an earlier run began it)
          logging.info("%s: %s, seed %d: the model of %s -> %s", prefix, row.name, seed,
                       owner.name, run_dir)
          training.train(owner_cfg, datasets[key], flags_text=flagfile(owner_cfg))
        logging.info("%s: %s, seed %d: evaluating %s", prefix, row.name, seed, run_dir)
        result = evaluate_trained(row_cfg.replace(train={"model_dir": run_dir}),
                                  datasets[key])
      trained.add(run_dir)
      averages = result.eval.averages(cfg.eval.averages)
      result_row.values.append(list(result.eval.mean_ap * metrics.PERCENT)
                               + [v * metrics.PERCENT for v in averages.values()])
      result_row.histories.append(result.history)
      result_row.evals.append(result.eval)
      result_row.run_dirs.append(run_dir)
    result_row.values = np.asarray(result_row.values)
    results.append(result_row)
  write_tables(results, cfg, out, prefix, notes)
  write_curve(results, cfg, out, prefix)
  return results


def evaluate_trained(cfg: Config, dataset: data.Dataset) -> training.TrainResult:
  """The final evaluation of the model in cfg.train.model_dir under cfg's localization."""
  detections, result, _ = training.evaluate_model(
      load_predictor(cfg.train.model_dir, cfg.localize), dataset, cfg)
  return training.TrainResult(steps=cfg.train.train_steps, traces=0, losses={}, eval=result,
                              history=[(cfg.train.train_steps, result.mean_ap.copy())],
                              loss_history=[], first_step_seconds=0.0, detections=detections)


def _cell(values: np.ndarray) -> str:
  if len(values) == 1:
    return f"{values[0]:.1f}"
  return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"


def markdown_table(results: list[RowResult], cols: list[str]) -> str:
  # (mv's rows are models, not losses: no header, as docs/microvideos.md shows them)
  first = "| Losses |" if {r.name for r in results} <= {row.name for row in ROWS} else "| |"
  lines = [f"{first} " + " | ".join(cols) + " |",
           "|---|" + "---:|" * len(cols)]
  extra = {row.name for row in EXTRA_ROWS}
  for k, r in enumerate(results):
    if r.name in extra and (k == 0 or results[k - 1].name not in extra):
      lines.append("| *extra rows (not in Table 1)* |" + " |" * len(cols))
    lines.append(f"| {r.name} | " + " | ".join(_cell(r.values[:, j]) for j in range(len(cols)))
                 + " |")
  seeds = len(results[0].values) if results else 0
  lines.append("")
  over = f"mean ± std over {seeds} seeds" if seeds > 1 else "1 seed"
  lines.append(f"mAP (%) at each tIoU; {over}.")
  return "\n".join(lines) + "\n"


def markdown(results: list[RowResult], cfg: Config,
             notes: Optional[Notes] = None) -> str:
  """OUT/<prefix>.md: the table, then `notes(results)` if given."""
  table = markdown_table(results, columns(cfg))
  return table + "\n" + notes(results) if notes else table


def summary(results: list[RowResult], cfg: Config) -> str:
  """What wtal_tf.ablation prints: the table, and the files `run` wrote."""
  return (markdown_table(results, columns(cfg))
          + f"\nwritten under {cfg.train.model_dir}: {', '.join(written_files(results))}")


def write_tables(results: list[RowResult], cfg: Config, out: str, prefix: str,
                 notes: Optional[Notes] = None) -> None:
  io_utils.write_text(os.path.join(out, f"{prefix}.md"), markdown(results, cfg, notes))
  cols = columns(cfg)
  buffer = io.StringIO()
  writer = csv.writer(buffer)
  writer.writerow(["row", "seed", "run_dir"] + cols)  # (the seed, as its run_dir's seed<s>)
  for r in results:
    for k, (values, run_dir) in enumerate(zip(r.values, r.run_dirs)):
      writer.writerow([r.name, cfg.train.seed + k, run_dir] + [f"{v:.4f}" for v in values])
  io_utils.write_text(os.path.join(out, f"{prefix}.csv"), buffer.getvalue())


def _curves(results: list[RowResult]) -> list[RowResult]:
  """The rows of the curve: STPN and the full model, if they ran and were evaluated."""
  return [r for r in results if r.name in CURVE_ROWS and r.histories[0]]


def written_files(results: list[RowResult], prefix: str = "ablation") -> list[str]:
  """The files `run` wrote under OUT for `results`: the table, and the curve if it has rows."""
  curve = [f"{prefix}_curve.png", f"{prefix}_curve.csv"] if _curves(results) else []
  return [f"{prefix}.md", f"{prefix}.csv", *curve]


def write_curve(results: list[RowResult], cfg: Config, out: str, prefix: str) -> None:
  """mAP (mean over tIoUs) against training steps for STPN and the full model; without
  either row, an earlier run's curve is removed (it would not match the table)."""
  curves = _curves(results)
  if not curves:
    for ext in (".png", ".csv"):
      with contextlib.suppress(OSError):  # (none there; or not a file: left alone)
        os.remove(os.path.join(out, f"{prefix}_curve{ext}"))
    return
  fig = plotting.figure(*CURVE_SIZE_IN)
  ax = fig.add_subplot()
  buffer = io.StringIO()
  writer = csv.writer(buffer)
  writer.writerow(["row", "seed", "step", "mean_mAP"])
  for r in curves:
    for k, history in enumerate(r.histories):
      steps = [s for s, _ in history]
      values = [float(np.mean(m)) * metrics.PERCENT for _, m in history]
      writer.writerows([r.name, cfg.train.seed + k, s, f"{v:.4f}"]
                       for s, v in zip(steps, values))
      ax.plot(steps, values, marker="o", alpha=0.85, label=r.name if k == 0 else None,
              color="tab:red" if r.name == STPN.name else "tab:blue")
  ax.set_xlabel("training step")
  ax.set_ylabel(f"mAP (%), mean over tIoU {cfg.eval.tiou}")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  plotting.save_png(fig, os.path.join(out, f"{prefix}_curve.png"))
  io_utils.write_text(os.path.join(out, f"{prefix}_curve.csv"), buffer.getvalue())


def select_rows(names: list[str]) -> tuple[Row, ...]:
  """The rows named (by name or slug, e.g. stpn,lfg_lbg); all rows if none.

  "stpn" names the "Lfg+Lsparse (STPN)" row (its slug is lfg_lsparse_stpn).
  """
  if not names:
    return ROWS
  by_key = {key: row for row in ROWS for key in (row.name, slug(row.name))}
  by_key[STPN_ALIAS] = STPN
  unknown = [n for n in names if n not in by_key]
  if unknown:
    raise UserError(f"--ablation_rows: unknown rows {unknown}; choose from "
                    f"{[slug(r.name) for r in ROWS]} (or {STPN_ALIAS!r} for the STPN row)")
  rows = []
  for row in (by_key[n] for n in names):
    if row not in rows:  # each row once, in the order given ("stpn,lfg_lsparse_stpn")
      rows.append(row)
  return tuple(rows)
