"""A small WebHDFS server for tests: HDFS's REST API (namenode and datanode on one port,
files in memory) as Beam's hadoopfilesystem reaches it through the `hdfs` package.

It keeps the HDFS behaviour an extraction into hdfs:// depends on, as the WebHDFS REST
reference (hadoop.apache.org, WebHDFS.html) describes it: CREATE answers with a 307
redirect to a "datanode" that takes the data; a file is visible, at its length so far,
while it is being written; RENAME does not overwrite (it answers false when the
destination is a file, or moves the source into it when it is a folder); LISTSTATUS
lists one folder, not its subfolders; errors are RemoteExceptions (404
FileNotFoundException, 403 FileAlreadyExistsException). Not covered: permissions,
users, append, block locations, snapshots.

  with WebHDFS() as server:   # server.port; server.files() -> {path: bytes}; server.put()
"""

import hashlib
import http.server
import json
import posixpath
import threading
import time
import urllib.parse

PREFIX = "/webhdfs/v1"
BLOCK_SIZE = 128 * 2**20  # bytes: HDFS's default block size, reported in FileStatus


class _Tree:
  """HDFS's namespace in memory: folders and files, each with a modification time."""

  def __init__(self):
    self.lock = threading.Lock()
    self.dirs = {"/": _now_ms()}
    self.data: dict[str, bytearray] = {}
    self.mtime: dict[str, int] = {}
    self.created: list[str] = []  # every file created, in order

  def status(self, path: str, suffix: str) -> dict:
    is_dir = path in self.dirs
    return {"pathSuffix": suffix, "type": "DIRECTORY" if is_dir else "FILE",
            "length": 0 if is_dir else len(self.data[path]),
            "modificationTime": self.dirs[path] if is_dir else self.mtime[path],
            "accessTime": 0, "blockSize": 0 if is_dir else BLOCK_SIZE, "replication": 1,
            "owner": "test", "group": "supergroup", "permission": "755" if is_dir else "644",
            "childrenNum": len(self.children(path)) if is_dir else 0, "fileId": 0}

  def exists(self, path: str) -> bool:
    return path in self.dirs or path in self.data

  def children(self, path: str) -> list[str]:
    return sorted(p for p in [*self.dirs, *self.data]
                  if p != "/" and posixpath.dirname(p) == path)

  def mkdirs(self, path: str) -> bool:
    parts = [p for p in path.split("/") if p]
    for i in range(1, len(parts) + 1):
      folder = "/" + "/".join(parts[:i])
      if folder in self.data:
        return False
      self.dirs.setdefault(folder, _now_ms())
    return True

  def below(self, path: str) -> list[str]:
    return [p for p in [*self.dirs, *self.data] if p.startswith(path.rstrip("/") + "/")]


def _now_ms() -> int:
  return int(time.time() * 1000)


class _Handler(http.server.BaseHTTPRequestHandler):
  server_version = "WebHDFS-test"
  tree: _Tree  # set on the class made for each server

  def log_message(self, *args):  # quiet
    pass

  # -------------------------------------------------------------- helpers

  def _parse(self) -> tuple[str, dict]:
    url = urllib.parse.urlsplit(self.path)
    if not url.path.startswith(PREFIX):
      raise _Remote(404, "FileNotFoundException", f"no WebHDFS path: {url.path}")
    path = posixpath.normpath(urllib.parse.unquote(url.path[len(PREFIX):]) or "/")
    return path, {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}

  def _send(self, code: int, body: bytes = b"", content_type="application/json",
            headers=()):
    self.send_response(code)
    for key, value in headers:
      self.send_header(key, value)
    self.send_header("Content-Type", content_type)
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    self.wfile.write(body)

  def _json(self, obj, code=200):
    self._send(code, json.dumps(obj).encode())

  def _redirect(self, params: dict):
    query = urllib.parse.urlencode({**params, "datanode": "true"})
    host, port = self.server.server_address[:2]
    location = f"http://{host}:{port}{urllib.parse.urlsplit(self.path).path}?{query}"
    self._send(307, headers=[("Location", location)])

  def _body_chunks(self):
    """The request body, as it arrives (chunked transfer encoding or Content-Length)."""
    if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
      while True:
        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
        if size == 0:
          while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
            pass
          return
        yield self.rfile.read(size)
        self.rfile.readline()  # the CRLF after each chunk
    else:
      length = int(self.headers.get("Content-Length") or 0)
      if length:
        yield self.rfile.read(length)

  def _dispatch(self, method: str):
    try:
      path, params = self._parse()
      op = params.get("op", "").upper()
      handler = getattr(self, f"_{method}_{op.lower()}", None)
      if handler is None:
        raise _Remote(400, "IllegalArgumentException", f"Invalid value for webhdfs parameter "
                      f"\"op\": {op} for {method}")
      handler(path, params)
    except _Remote as e:
      self._json({"RemoteException": {"exception": e.exception, "message": e.message,
                                      "javaClassName": f"java.io.{e.exception}"}}, e.code)

  def do_GET(self):  # noqa: N802 (http.server's names)
    self._dispatch("get")

  def do_PUT(self):  # noqa: N802
    self._dispatch("put")

  def do_DELETE(self):  # noqa: N802
    self._dispatch("delete")

  def do_POST(self):  # noqa: N802
    self._dispatch("post")

  # -------------------------------------------------------------- operations

  def _get_getfilestatus(self, path, _):
    with self.tree.lock:
      if not self.tree.exists(path):
        raise _not_found(path)
      self._json({"FileStatus": self.tree.status(path, "")})

  def _get_liststatus(self, path, _):
    with self.tree.lock:
      if not self.tree.exists(path):
        raise _not_found(path)
      if path in self.tree.data:  # a file lists as itself
        statuses = [self.tree.status(path, "")]
      else:
        statuses = [self.tree.status(c, posixpath.basename(c)) for c in self.tree.children(path)]
    self._json({"FileStatuses": {"FileStatus": statuses}})

  def _get_gethomedirectory(self, _, params):
    self._json({"Path": f"/user/{params.get('user.name', 'test')}"})

  def _get_getfilechecksum(self, path, _):
    with self.tree.lock:
      if path not in self.tree.data:
        raise _not_found(path)
      digest = hashlib.md5(bytes(self.tree.data[path])).hexdigest()
    self._json({"FileChecksum": {"algorithm": "MD5-of-0MD5-of-512CRC32C",
                                 "bytes": digest + "0" * 24, "length": 28}})

  def _get_open(self, path, params):
    with self.tree.lock:
      if path not in self.tree.data:
        raise _not_found(path) if path not in self.tree.dirs else _Remote(
            404, "FileNotFoundException", f"Path is not a file: {path}")
      if "datanode" not in params:
        return self._redirect(params)
      data = bytes(self.tree.data[path])
    offset = int(params.get("offset") or 0)
    length = params.get("length")
    end = len(data) if length in (None, "", "None") else offset + int(length)
    self._send(200, data[offset:end], content_type="application/octet-stream")

  def _put_create(self, path, params):
    overwrite = params.get("overwrite", "false").lower() == "true"
    with self.tree.lock:
      if path in self.tree.dirs:
        raise _Remote(403, "FileAlreadyExistsException", f"{path} already exists as a directory")
      if path in self.tree.data and not overwrite:
        raise _Remote(403, "FileAlreadyExistsException", f"{path} for client already exists")
      if "datanode" not in params:
        return self._redirect(params)
      if not self.tree.mkdirs(posixpath.dirname(path)):
        raise _Remote(403, "ParentNotDirectoryException", f"{posixpath.dirname(path)} is a file")
      self.tree.data[path] = bytearray()  # visible while it is written, as on HDFS
      self.tree.mtime[path] = _now_ms()
      self.tree.created.append(path)
    for chunk in self._body_chunks():
      with self.tree.lock:
        if path in self.tree.data:
          self.tree.data[path] += chunk
          self.tree.mtime[path] = _now_ms()
    self._send(201, headers=[("Location", f"hdfs://127.0.0.1{path}")])

  def _put_mkdirs(self, path, _):
    with self.tree.lock:
      if not self.tree.mkdirs(path):
        raise _Remote(403, "FileAlreadyExistsException", f"Parent path is not a directory: {path}")
    self._json({"boolean": True})

  def _put_rename(self, path, params):
    destination = posixpath.normpath(params.get("destination", ""))
    with self.tree.lock:
      tree = self.tree
      if destination in tree.dirs:  # into the folder
        destination = posixpath.join(destination, posixpath.basename(path))
      ok = (tree.exists(path) and not tree.exists(destination) and path != "/"
            and posixpath.dirname(destination) in tree.dirs
            and not destination.startswith(path + "/"))
      if ok:
        for old in [path, *tree.below(path)]:
          new = destination + old[len(path):]
          if old in tree.dirs:
            tree.dirs[new] = tree.dirs.pop(old)
          else:
            tree.data[new] = tree.data.pop(old)
            tree.mtime[new] = tree.mtime.pop(old)
    self._json({"boolean": ok})

  def _delete_delete(self, path, params):
    recursive = params.get("recursive", "false").lower() == "true"
    with self.tree.lock:
      tree = self.tree
      if not tree.exists(path) or path == "/":
        return self._json({"boolean": False})
      inside = tree.below(path)
      if inside and not recursive:
        raise _Remote(403, "PathIsNotEmptyDirectoryException", f"{path} is non empty")
      for p in [path, *inside]:
        tree.dirs.pop(p, None)
        tree.data.pop(p, None)
        tree.mtime.pop(p, None)
    self._json({"boolean": True})


class _Remote(Exception):
  def __init__(self, code: int, exception: str, message: str):
    super().__init__(message)
    self.code, self.exception, self.message = code, exception, message


def _not_found(path: str) -> _Remote:
  return _Remote(404, "FileNotFoundException", f"File does not exist: {path}")


class WebHDFS:
  """A WebHDFS server on 127.0.0.1 (a free port), serving from threads until closed."""

  def __init__(self):
    self._tree = _Tree()
    handler = type("Handler", (_Handler,), {"tree": self._tree})
    self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    self._server.daemon_threads = True
    self.port = self._server.server_address[1]
    self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._server.shutdown()
    self._server.server_close()

  def files(self, below: str = "/") -> dict[str, bytes]:
    """{path relative to `below`: bytes} of every file under `below`."""
    with self._tree.lock:
      root = below.rstrip("/") + "/"
      return {p[len(root):]: bytes(d) for p, d in self._tree.data.items()
              if p.startswith(root)}

  def created(self) -> list[str]:
    """The path of every file created so far, in order (renames not included)."""
    with self._tree.lock:
      return list(self._tree.created)

  def put(self, path: str, data: bytes, age_s: float = 0.0) -> None:
    """Writes a file directly (its folders made), last modified `age_s` seconds ago."""
    with self._tree.lock:
      self._tree.mkdirs(posixpath.dirname(path))
      self._tree.data[path] = bytearray(data)
      self._tree.mtime[path] = _now_ms() - int(age_s * 1000)
