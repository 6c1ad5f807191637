"""The model (Keras, TensorFlow): network, losses, and the model directory's checkpoints."""
