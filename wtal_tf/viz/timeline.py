"""One video on one time axis: ground truth, attention, T-CAM and detections (paper Fig. 4/5).

`render` returns a matplotlib Figure; `plotting.to_array` makes it an image
for TensorBoard and `plotting.save_png` writes it to a file.
"""

from typing import Mapping, NamedTuple, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure

from wtal_tf.config import LocalizeConfig
from wtal_tf.data.groundtruth import GTVideo
from wtal_tf.localization.detections import Detections, to_seconds
from wtal_tf.localization.fusion import fuse, tcam_signal
from wtal_tf.localization import stpn_proposals
from wtal_tf.localization.outputs import StreamOutput
from wtal_tf.viz import plotting

MAX_DETECTIONS_PER_CLASS = 20  # the highest-scoring ones are drawn, for readability
MAX_CLASSES_DRAWN = 5  # the most probable detected classes get curves and detection rows
# (an untrained or STPN model can detect every class: 20 legend rows do not fit a panel)
LEGEND_ROWS = 4  # of the class curves' legend, in as many columns as it takes
DETECTION_HEADROOM = 1.15  # the detections row spans this times the range of the scores
DETECTION_BAR = 0.02  # one detection's bar height, as a fraction of that range
LONE_POINT = "o"  # the marker of a curve of one segment (a line of one point draws nothing)
# drawn (and 0)
WIDTH_IN = 12.0
PANEL_HEIGHT_IN = 4.2
STREAM_COLORS = {"rgb": "tab:red", "flow": "tab:green"}
STREAM_STYLES = {"rgb": "-", "flow": ":"}


class Panel(NamedTuple):
  """One model's view of the video: its outputs, detections and resolved localization."""
  title: str
  outputs: Mapping[str, StreamOutput]
  detections: Detections
  localize: LocalizeConfig  # proposal_source resolved (attention, tcam or stpn)


def _class_colors(names: Sequence[str]):
  cmap = {name: f"C{k % 10}" for k, name in enumerate(sorted(set(names)))}
  return lambda name: cmap[name]


def _draw_panel(axes, panel: Panel, classes, seconds_per_segment, gt, color):
  """GT, attention, the signal the proposals threshold or the Eq 12 signal, detections.

  The dashed line is the largest proposal threshold τ, on the row whose
  signal the model's proposals come from: the fused attention (the paper) or
  the fused λ·sigmoid(T-CAM) of each kept class ("tcam"); for STPN's own
  post-processing ("stpn") each stream's λˢ·sigmoid(T-CAMˢ) and its
  --stpn_signal_threshold cut, for the classes the stream makes proposals of (its own p
  above --class_threshold).
  """
  ax_gt, ax_att, ax_cam, ax_det = axes
  outputs, dets, cfg = panel.outputs, panel.detections, panel.localize
  t = len(next(iter(outputs.values())).attention)
  times = (np.arange(t) + 0.5) * seconds_per_segment
  probs, attention, wcas = fuse(outputs, cfg.theta)
  detected = sorted(set(dets.classes.tolist())) or [int(np.argmax(probs))]
  kept = sorted(sorted(detected, key=lambda c: -probs[c])[:MAX_CLASSES_DRAWN])
  more = (f" (the {len(kept)} most probable of {len(detected)} detected classes)"
          if len(kept) < len(detected) else "")
  ax_gt.set_title(plotting.literal(panel.title) + more, loc="left", fontsize=9)
  if gt is not None:
    for inst in gt.instances:
      ax_gt.broken_barh([(inst.start, max(inst.end - inst.start, 1e-3))], (0, 1),
                        color=color(inst.label), alpha=0.8)
    labels = sorted({i.label for i in gt.instances})
    ax_gt.set_yticks([0.5], [plotting.literal(", ".join(labels)) if labels else "(no instances)"],
                     fontsize=7)
  else:
    ax_gt.set_yticks([0.5], ["no ground truth"], fontsize=7)
  ax_gt.set_ylabel("GT", fontsize=8)
  marker = LONE_POINT if len(times) == 1 else None
  for s, out in outputs.items():
    ax_att.plot(times, out.attention, lw=0.7, alpha=0.6, color=STREAM_COLORS.get(s),
                label=f"λ {s}", marker=marker)
  if len(outputs) > 1:
    ax_att.plot(times, attention, lw=1.2, color="k", label="λ fused", marker=marker)
  ax_att.set_ylim(-0.05, 1.05)
  ax_att.set_ylabel("attention", fontsize=8)
  curves = []  # (signal [T, K], line style, legend suffix, probability [K], drawn [K])
  fused = (probs[kept], np.ones(len(kept), bool))
  if cfg.proposal_source == "stpn":  # each stream's λˢ·σ(T-CAMˢ), cut at one value, for
    for s, out in outputs.items():  # the classes it makes proposals of, with its own p
      psi, _ = stpn_proposals.stream_signals(outputs, s, np.asarray(kept), cfg.theta)
      p = out.class_probs[kept]
      curves.append((psi, STREAM_STYLES.get(s, "-"), f" {s}" if len(outputs) > 1 else "",
                     p, p > cfg.class_threshold))
    label, ax_proposals, cut = "λˢ·σ(T-CAMˢ)", ax_cam, cfg.stpn_signal_threshold
    ax_cam.set_ylim(-0.05, 1.05)
  elif cfg.proposal_source == "tcam":
    curves.append((tcam_signal(outputs, cfg.theta, kept).T, "-", "", *fused))
    label, ax_proposals, cut = "λ·σ(T-CAM)", ax_cam, max(cfg.attention_thresholds)
    ax_cam.set_ylim(-0.05, 1.05)
  else:
    curves.append((wcas[:, kept], "-", "", *fused))
    label, ax_proposals, cut = "weighted\nT-CAM", ax_att, max(cfg.attention_thresholds)
  ax_proposals.axhline(cut, ls="--", lw=0.8, color="0.4",
                       label="cut" if cfg.proposal_source == "stpn" else "largest τ")
  ax_att.legend(fontsize=6, loc="upper right", ncol=4)
  for signal, style, suffix, p, drawn in curves:
    for k in np.flatnonzero(drawn):
      c = kept[k]
      ax_cam.plot(times, signal[:, k], lw=0.9, ls=style, color=color(classes[c]),
                  label=f"{plotting.literal(classes[c])}{suffix} (p={p[k]:.2f})",
                  marker=marker)
  ax_cam.set_ylabel(label, fontsize=8)
  entries = len(ax_cam.get_legend_handles_labels()[0])
  ax_cam.legend(fontsize=6, loc="upper right", ncol=max(1, -(-entries // LEGEND_ROWS)))
  start, end = to_seconds(dets, seconds_per_segment)
  drawn = {c: idx[np.argsort(-dets.scores[idx], kind="stable")][:MAX_DETECTIONS_PER_CLASS]
           for c in kept for idx in [np.flatnonzero(dets.classes == c)]}
  scores = np.concatenate([dets.scores[i] for i in drawn.values()] + [np.zeros(1)])
  low, high = float(scores.min()), float(scores.max())  # (Eq 12 scores may be negative)
  span = (high - low) or 1.0
  for c, idx in drawn.items():
    for i in idx:
      ax_det.broken_barh([(start[i], end[i] - start[i])],
                         (dets.scores[i], DETECTION_BAR * span), color=color(classes[c]),
                         alpha=0.9)
  # (autoscaled, one detection's bar would fill the row)
  ax_det.set_ylim(low, low + span * DETECTION_HEADROOM)
  ax_det.set_ylabel("detections\n(score)", fontsize=8)


def render(panels: Sequence[Panel], classes: Sequence[str], seconds_per_segment: float,
           gt: Optional[GTVideo] = None, duration: Optional[float] = None) -> Figure:
  """Draws one panel (4 rows) per model, on a shared axis in seconds, to the end of the
  video (`duration`, else the ground truth's, else its last whole segment's)."""
  fig = plotting.figure(WIDTH_IN, PANEL_HEIGHT_IN * len(panels))
  axes = fig.subplots(4 * len(panels), 1, sharex=True,
                      gridspec_kw={"height_ratios": [0.5, 1, 1, 1] * len(panels)})
  names = list(classes) + ([i.label for i in gt.instances] if gt is not None else [])
  color = _class_colors(names)
  for k, panel in enumerate(panels):
    _draw_panel(axes[4 * k:4 * k + 4], panel, classes, seconds_per_segment, gt, color)
  t = len(next(iter(panels[0].outputs.values())).attention)
  duration = duration or (gt.duration if gt is not None else None)
  axes[-1].set_xlim(0, max(t * seconds_per_segment, duration or 0))
  axes[-1].set_xlabel("time (s)")
  for ax in axes:
    ax.tick_params(labelsize=7)
  with plotting.missing_glyphs_quiet():  # (laying out measures the text)
    fig.tight_layout(h_pad=0.3)
  return fig
