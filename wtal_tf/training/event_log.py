"""TensorBoard event files whose lost writes are noticed.

TensorFlow's summary writer drops a write its disk refuses (a full disk) without
an error, on flush too: a run would end with exit status 0, its TensorBoard data
cut short, and a resumed run would not write it again. An EventLog counts the
events it writes and, on flush, counts the complete records of its file: fewer
is a WriteError naming the file, raised before the run goes on as if they were
there (before a checkpoint, before eval_history.json marks the step logged).
"""

import glob
import os
import struct

import tensorflow as tf

from wtal_tf.errors import WriteError

EVENTS_PATTERN = "events.out.tfevents.*"  # TensorFlow's event files (name: time, host, pid)
RECORD_HEADER = struct.Struct("<QI")  # a TFRecord's length (uint64) and its CRC (uint32)
RECORD_FOOTER_BYTES = 4  # the CRC of its data


class EventLog:
  """A tf.summary file writer for one folder, with scalar/image that count the events
  written and a flush that checks they are in its file."""

  def __init__(self, folder: str):
    self.folder = folder
    before = set(glob.glob(os.path.join(glob.escape(folder), EVENTS_PATTERN)))
    self.writer = tf.summary.create_file_writer(folder)
    mine = f".{os.getpid()}."
    new = sorted(set(glob.glob(os.path.join(glob.escape(folder), EVENTS_PATTERN))) - before)
    self.path = next((p for p in reversed(new) if mine in os.path.basename(p)), None)
    self.written = 1  # events written: the file's first record is its version
    self.complete, self._offset = 0, 0  # records found whole so far, and where they end

  def as_default(self, step: int):
    return self.writer.as_default(step=step)

  def scalar(self, name: str, value, **kwargs) -> None:
    """tf.summary.scalar, counted (within as_default)."""
    tf.summary.scalar(name, value, **kwargs)
    self.written += 1

  def image(self, name: str, images) -> None:
    """tf.summary.image of [N, H, W, C] `images`, counted (within as_default)."""
    tf.summary.image(name, images)
    self.written += 1

  def flush(self) -> None:
    """Flushes; a WriteError naming the file if some event written is not in it whole."""
    self.writer.flush()
    if self.path is None:  # (its file was not found at creation: nothing to check)
      return
    try:
      with open(self.path, "rb") as f:
        f.seek(self._offset)
        data = f.read()
    except OSError as e:
      raise WriteError(e.errno, e.strerror, self.path) from None
    pos = 0
    while pos + RECORD_HEADER.size <= len(data):
      length, _ = RECORD_HEADER.unpack_from(data, pos)
      end = pos + RECORD_HEADER.size + length + RECORD_FOOTER_BYTES
      if end > len(data):
        break
      self.complete, pos = self.complete + 1, end
    self._offset += pos
    if self.complete < self.written:
      raise WriteError(None, f"{self.written - self.complete} of its {self.written} "
                       "TensorBoard events are missing: a full disk?", self.path)
