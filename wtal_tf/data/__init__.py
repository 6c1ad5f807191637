"""Datasets on the host: ground truth, feature readers, generators (the data contract they
follow is wtal_tf/contract.py).

Numpy only: nothing here imports TensorFlow.
"""
