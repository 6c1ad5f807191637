"""Dask preload for the workers of an extraction cluster:

  dask worker ADDRESS --preload wtal_tf.features.dask_preload

Under Beam's Dask runner the workers run the pipeline's steps
(features.beam_steps); the extracting step builds an Extractor, which imports
TensorFlow, PyAV and OpenCV. Without this, a new cluster's first run
waits for those imports in each worker: they take 3.4 s for one process on one
core of the 2-core machine of docs/raw_video.md, more when several processes
start at once. Preloaded, each worker imports them when it starts, with
wtal_tf's quiet start-up (TensorFlow's C++ start-up lines kept out of the
cluster's logs; see wtal_tf/startup.py), so a first run pays only the I3D
build, once per worker process and settings, like every later run.

The imports are made in `dask_setup`, which Dask calls in the worker process as
it starts, not when this module is imported: `dask worker` also imports its
preload modules in the nanny, the process that starts and watches the worker
(to look for command-line options they define), which would otherwise hold
TensorFlow (about 0.9 GB) for nothing.

The scheduler needs no preload: it only unpickles the steps to plan the tasks,
which imports Beam and features.beam_steps, not TensorFlow.
"""

from wtal_tf import startup


def dask_setup(worker) -> None:  # pylint: disable=unused-argument
  """Dask's preload hook, run in the worker process when it starts: the imports, quietly."""
  startup.quiet()
  # pylint: disable=import-outside-toplevel,unused-import
  from wtal_tf.features import beam_steps  # noqa: F401  (Beam: the steps the worker runs)
  from wtal_tf.features import extraction  # noqa: F401  (TensorFlow, PyAV, OpenCV)
