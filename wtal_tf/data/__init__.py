"""Datasets on the host: the data contract, ground truth, feature readers, generators.

Numpy only: nothing here imports TensorFlow.
"""
