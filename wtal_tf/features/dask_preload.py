"""Dask worker preload: `dask worker ADDRESS --preload wtal_tf.features.dask_preload`.

Under Beam's Dask runner the extraction's steps run inside the Dask worker
processes. Without this, the first work item a fresh worker gets also pays for
importing TensorFlow, PyAV, OpenCV, Beam and wtal_tf's feature modules (3.4 s
for one process on one core of the 2-core machine of docs/raw_video.md, more
when several workers start at once). Preloaded, each worker imports them when
it starts, with wtal_tf's quiet start-up (TensorFlow's C++ start-up lines
kept out of the worker's log; see wtal_tf/startup.py), so a new cluster's first
run pays only the I3D build, once per worker process and settings, like every
later run.
"""

from wtal_tf import startup

startup.quiet()

# pylint: disable=wrong-import-position,unused-import
from wtal_tf.features import beam_pipeline  # noqa: E402,F401  (TensorFlow, PyAV, OpenCV, Beam)
