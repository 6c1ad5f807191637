"""Prints the README's flag table from the flag definitions in wtal_tf/cli.py.

python -m wtal_tf.tools.flags_table
"""

from wtal_tf import cli


def main():
  print(cli.flags_markdown())


if __name__ == "__main__":
  main()
