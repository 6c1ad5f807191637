"""Detections from one video's model outputs, on the host (numpy only, no TensorFlow)."""
