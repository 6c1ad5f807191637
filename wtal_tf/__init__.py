"""wtal_tf: weakly-supervised temporal action localization with background modeling.

TensorFlow/Keras implementation of Nguyen, Ramanan & Fowlkes, "Weakly-supervised
Action Localization with Background Modeling" (ICCV 2019).
"""

__version__ = "0.1.0"

# Before anything imports TensorFlow: see wtal_tf/startup.py (acts only in
# `python -m wtal_tf.<verb>` processes and the Beam workers they start).
from wtal_tf import startup as _startup  # pylint: disable=wrong-import-position

_startup.on_package_import()
