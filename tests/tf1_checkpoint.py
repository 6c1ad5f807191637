"""A TF1 name -> tensor checkpoint as DeepMind's kinetics-i3d wrote them (for loader tests)."""

import tensorflow as tf


def write_tf1_checkpoint(directory, variables) -> str:
  """Writes `variables` ({TF1 name: array}) with tf.compat.v1.train.Saver under
  `directory` (created); returns the checkpoint prefix."""
  directory.mkdir(parents=True, exist_ok=True)
  with tf.Graph().as_default():
    var_list = {name: tf.compat.v1.Variable(value, name=name.replace("/", "_"))
                for name, value in variables.items()}
    saver = tf.compat.v1.train.Saver(var_list=var_list)
    with tf.compat.v1.Session() as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      return saver.save(sess, str(directory / "model.ckpt"), write_meta_graph=False)
