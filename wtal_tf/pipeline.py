"""Former name of `wtal_tf.train_eval`, kept so existing scripts keep working.

python -m wtal_tf.pipeline ...   is   python -m wtal_tf.train_eval ...
"""

from wtal_tf import cli
from wtal_tf.train_eval import define_flags, main

if __name__ == "__main__":
  define_flags()
  cli.run(main)
