"""Scoring detections: ActivityNet JSON in and out, mAP at tIoU thresholds (numpy and
pandas, no TensorFlow)."""
