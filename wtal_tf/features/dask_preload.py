"""Dask preload for the scheduler and the workers of an extraction cluster:

  dask scheduler --preload wtal_tf.features.dask_preload
  dask worker ADDRESS --preload wtal_tf.features.dask_preload

Under Beam's Dask runner the scheduler unpickles the pipeline's steps (which
imports wtal_tf's feature modules, and so TensorFlow) when the first run is
submitted, and the workers run the steps. Without this, a new cluster's first
run waits for those imports: TensorFlow, PyAV, OpenCV, Beam and the feature
modules take 3.4 s for one process on one core of the 2-core machine of
docs/raw_video.md (more when several processes start at once), first in the
scheduler and then in each worker. Preloaded, each process imports them when it
starts, with wtal_tf's quiet start-up (TensorFlow's C++ start-up lines kept out
of the cluster's logs; see wtal_tf/startup.py), so a first run pays only the
I3D build, once per worker process and settings, like every later run.
"""

from wtal_tf import startup

startup.quiet()

# pylint: disable=wrong-import-position,unused-import
from wtal_tf.features import beam_pipeline  # noqa: E402,F401  (TensorFlow, PyAV, OpenCV, Beam)
