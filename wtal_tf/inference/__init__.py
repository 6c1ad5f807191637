"""A trained model at work: the predictor, detections of a test set or of one new video."""
