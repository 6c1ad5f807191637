"""TensorBoard event files whose lost writes are noticed.

On a full disk TensorFlow's summary writer either raises an OpError (when it
flushes: at the end of an as_default block, or with a full queue) or drops the
write without an error (a record too large for the space left, measured here),
on flush too: a run would end with exit status 0, its TensorBoard data cut
short, and a resumed run would not write it again. An EventLog counts the
events it writes and, on flush, counts the complete records of its file: fewer
is a WriteError naming the file, as is an OpError, raised before the run goes
on as if they were there (before a checkpoint, before eval_history.json marks
the step logged).
"""

import contextlib
import glob
import os
import struct

import tensorflow as tf

from wtal_tf.errors import WriteError, op_reason

EVENTS_PATTERN = "events.out.tfevents.*"  # TensorFlow's event files (name: time, host, pid)
RECORD_HEADER = struct.Struct("<QI")  # a TFRecord's length (uint64) and its CRC (uint32)
RECORD_FOOTER_BYTES = 4  # the CRC of its data


class EventLog:
  """A tf.summary file writer for one folder, with scalar/image that count the events
  written and a flush that checks they are in its file."""

  def __init__(self, folder: str):
    self.folder = folder
    pattern = os.path.join(glob.escape(folder), EVENTS_PATTERN)
    before = set(glob.glob(pattern))
    self.writer = tf.summary.create_file_writer(folder)
    mine = f".{os.getpid()}."
    new = sorted(set(glob.glob(pattern)) - before)
    self.path = next((p for p in reversed(new) if mine in os.path.basename(p)), None)
    self.written = 1  # events written: the file's first record is its version
    self.complete, self._offset = 0, 0  # records found whole so far, and where they end

  @contextlib.contextmanager
  def as_default(self, step: int):
    """The writer as tf.summary's default at `step` (it flushes when the block ends)."""
    with self._refused():
      with self.writer.as_default(step=step):
        yield

  @contextlib.contextmanager
  def _refused(self):
    """TensorFlow's error of a refused write as a WriteError naming the file."""
    try:
      yield
    except tf.errors.OpError as e:
      raise WriteError(None, f"TensorBoard events: {op_reason(e.message) or type(e).__name__}",
                       self.path or self.folder) from None

  def scalar(self, name: str, value, **kwargs) -> None:
    """tf.summary.scalar, counted (within as_default)."""
    with self._refused():
      tf.summary.scalar(name, value, **kwargs)
    self.written += 1

  def image(self, name: str, images) -> None:
    """tf.summary.image of [N, H, W, C] `images`, counted (within as_default)."""
    with self._refused():
      tf.summary.image(name, images)
    self.written += 1

  def flush(self) -> None:
    """Flushes; a WriteError naming the file if some event written is not in it whole."""
    with self._refused():
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
