"""The optimizer of the paper (§4: Adam) for a learning rate."""

import keras


def optimizer(learning_rate: float) -> keras.optimizers.Optimizer:
  return keras.optimizers.Adam(learning_rate=learning_rate)
