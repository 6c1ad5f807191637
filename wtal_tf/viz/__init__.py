"""Pictures: timelines of a video's outputs and detections (matplotlib, no TensorFlow)."""
