"""Training: the tf.data input pipeline, the optimizer and the train loop."""
