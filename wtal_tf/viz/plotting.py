"""Figures drawn with matplotlib's object API (no global pyplot state), saved atomically."""

import contextlib
import io
import warnings

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from wtal_tf import io_utils


def figure(width_in: float, height_in: float, dpi: int = 100) -> Figure:
  fig = Figure(figsize=(width_in, height_in), dpi=dpi)
  FigureCanvasAgg(fig)
  return fig


def literal(text: str) -> str:
  """`text` drawn as written: matplotlib reads a pair of `$` as maths (a video named
  `price_$10_to_$20` failed to draw, `cost $5^ vs $10` was drawn garbled); each `$`
  escaped, none is."""
  return text.replace("$", r"\$")


@contextlib.contextmanager
def missing_glyphs_quiet():
  """Characters the font lacks (e.g. a video named in Japanese) are drawn as boxes;
  matplotlib's multi-line warning for each is not printed."""
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font",
                            category=UserWarning)
    yield


def to_array(fig: Figure) -> np.ndarray:
  """RGB uint8 [H, W, 3] of a drawn figure."""
  with missing_glyphs_quiet():
    fig.canvas.draw()
  return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def save_png(fig: Figure, path: str) -> None:
  buffer = io.BytesIO()
  with missing_glyphs_quiet():
    fig.savefig(buffer, format="png")
  with io_utils.atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      f.write(buffer.getvalue())
