"""Raw video in: I3D segment features (RGB and TV-L1 flow) for wtal_tf.

Modules are imported on use (`from wtal_tf.features import i3d`); this package
itself imports nothing heavy.
"""
