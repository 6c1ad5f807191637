"""wtal_tf: weakly-supervised temporal action localization with background modeling.

TensorFlow/Keras implementation of Nguyen, Ramanan & Fowlkes, "Weakly-supervised
Action Localization with Background Modeling" (ICCV 2019).
"""

__version__ = "0.1.0"
