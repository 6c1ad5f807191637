"""Detections from one video's model outputs, on the host (numpy and scipy, no TensorFlow)."""
