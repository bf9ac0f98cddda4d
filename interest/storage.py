"""One filesystem API for everything that is not a DataFrame: models, LATEST, JSON, reports, PNGs,
checkpoints, and the sequence files a training worker reads.

Paths are local paths or URLs (``file://``, ``hdfs://``, ``s3a://``). The layer is fsspec:

- it works in every Python process (the driver, executors, training workers) with no JVM, which
  Hadoop's FileSystem through Spark's gateway cannot (it exists on the driver only);
- ``hdfs://namenode:8020/...`` goes through WebHDFS, plain HTTP to the namenode's web port
  (``storage.webhdfs_port``), so no libhdfs/JNI is needed; ``pyarrow.fs``'s HDFS client needs
  libhdfs and a Hadoop install on every node, which pip cannot provide;
- ``s3a://`` (Hadoop's name) maps to s3fs's ``s3://`` when s3fs is installed. Its endpoint, keys
  and path style come from Spark's own ``fs.s3a.*`` settings, so one setting serves both sides.

Spark's own DataFrame reads and writes stay on Hadoop's FileSystem in the JVM. TensorFlow has no
HDFS or S3 plugin here, so code that TensorFlow or Keras must read or write works in a local scratch
folder (``scratch()``) and moves it with ``upload`` / ``download``. Scratch folders live in the
temp directory and are removed when done, so nothing is left outside ``paths.root``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import getpass
import os
import posixpath
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import fsspec
from fsspec.implementations.local import LocalFileSystem

from interest.errors import RetryableError, UserError


class StorageError(UserError, OSError):
    """A location cannot be reached or written (one line naming the URL)."""


class StorageUnreachableError(RetryableError, StorageError):
    """The filesystem did not answer (namenode down, network): worth a retry (exit 75)."""


@dataclass
class _Settings:
    webhdfs_port: int = 9870
    webhdfs_host: str | None = None
    s3: dict[str, Any] = field(default_factory=dict)  # s3fs options (s3_options)


_SETTINGS = _Settings()


def configure(
    webhdfs_port: int | None = None, webhdfs_host: str | None = None, s3: Mapping[str, Any] | None = None
) -> None:
    """Set how ``hdfs://`` and ``s3a://`` URLs are reached (from the config; call once per
    process). The WebHDFS user is Hadoop's: $HADOOP_USER_NAME, else the login name."""
    if webhdfs_port is not None:
        _SETTINGS.webhdfs_port = int(webhdfs_port)
    _SETTINGS.webhdfs_host = webhdfs_host
    if s3 is not None:
        _SETTINGS.s3 = dict(s3)
    _filesystem.cache_clear()


def settings() -> _Settings:
    """A copy of the storage settings in effect (what ``configure`` last set)."""
    return dataclasses.replace(_SETTINGS)


def configure_from(cfg) -> None:
    """``configure`` from a Config's ``storage`` section and its Spark S3A settings."""
    s = cfg.storage
    configure(s.webhdfs_port, s.webhdfs_host, s3_options(cfg.spark.conf))


S3A = "spark.hadoop.fs.s3a."


def s3_options(conf: Mapping[str, Any]) -> dict[str, Any]:
    """s3fs options from Spark's ``fs.s3a.*`` settings: the endpoint, a key pair and path-style
    addressing. What is not set is left to the AWS defaults (environment, instance profile), as
    Hadoop's default credential chain does."""

    def get(key: str) -> str:
        return str(conf.get(S3A + key) or "").strip()

    out: dict[str, Any] = {}
    endpoint = get("endpoint")
    if endpoint:
        if "://" not in endpoint:  # S3A takes a bare host and picks the scheme by this setting
            endpoint = ("http://" if get("connection.ssl.enabled").lower() == "false" else "https://") + endpoint
        out["endpoint_url"] = endpoint
    if get("access.key") and get("secret.key"):
        out["key"], out["secret"] = get("access.key"), get("secret.key")
    if get("path.style.access").lower() == "true":
        out["config_kwargs"] = {"s3": {"addressing_style": "path"}}
    if get("endpoint.region"):
        out["client_kwargs"] = {"region_name": get("endpoint.region")}
    return out


def is_local(path: str) -> bool:
    return path.startswith("file:") or "://" not in path


def local_path(path: str) -> str:
    """A local path or ``file:`` URL (``file:///x`` or Hadoop's ``file:/x``) -> the plain path."""
    return urlparse(path).path if path.startswith("file:") else path


def normalize(path: str) -> str:
    """Local paths and ``file://`` URLs -> a plain local path; other URLs as they are."""
    return local_path(path) if is_local(path) else path


def join(base: str, *parts: str) -> str:
    """Join path parts onto a local path or a URL."""
    return posixpath.join(base.rstrip("/"), *parts) if "://" in base else os.path.join(base, *parts)


def name(path: str) -> str:
    return posixpath.basename(path.rstrip("/"))


def parent(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[0]


@functools.lru_cache(maxsize=16)
def _filesystem(scheme: str, netloc: str) -> fsspec.AbstractFileSystem:
    if scheme in ("", "file"):
        return LocalFileSystem()
    if scheme == "hdfs":
        host = netloc.split(":")[0] or _SETTINGS.webhdfs_host
        if not host:
            raise StorageError(
                "an hdfs:/// URL names no namenode: write hdfs://<namenode>:<port>/... or set storage.webhdfs_host"
            )
        user = os.environ.get("HADOOP_USER_NAME") or getpass.getuser()
        return fsspec.filesystem("webhdfs", host=host, port=_SETTINGS.webhdfs_port, user=user)
    if scheme in ("s3a", "s3"):
        return fsspec.filesystem("s3", **_SETTINGS.s3)
    return fsspec.filesystem(scheme)


def fs_path(path: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path inside it) for a local path or URL."""
    if is_local(path):
        return _filesystem("", ""), str(Path(local_path(path)).resolve())
    parsed = urlparse(path)
    fs = _filesystem(parsed.scheme, parsed.netloc)
    if parsed.scheme in ("s3a", "s3"):
        return fs, f"{parsed.netloc}{parsed.path}"
    return fs, parsed.path


def _call(path: str, what: str, fn, *args, **kwargs):
    """Run a filesystem call; failures other than a missing file become one-line StorageErrors."""
    try:
        return fn(*args, **kwargs)
    except FileNotFoundError:
        raise
    except Exception as exc:
        text = str(exc)
        if "Connection" in type(exc).__name__ or "Connection refused" in text or "connect" in text.lower():
            why = "connection refused" if "refused" in text else type(exc).__name__
            raise StorageUnreachableError(f"cannot {what} {path}: unreachable ({why})") from None
        if isinstance(exc, OSError):
            raise StorageError(f"cannot {what} {path}: {exc.strerror or text}") from None
        raise


# What a JVM says when a storage server does not answer (a namenode, an S3 endpoint); the S3
# SDK bundle carries its own shaded copy of Apache's HTTP client.
UNREACHABLE_JAVA = (
    "java.net.ConnectException",
    "java.net.NoRouteToHostException",
    "java.net.UnknownHostException",
    "java.net.SocketTimeoutException",
    "org.apache.hadoop.net.ConnectTimeoutException",
    "org.apache.http.conn.HttpHostConnectException",
    "com.amazonaws.thirdparty.apache.http.conn.HttpHostConnectException",
)


def unreachable_cause(exc: BaseException) -> str | None:
    """The first "server did not answer" among ``exc``'s causes, Python's and the JVM's, else None.

    A storage server that goes away in the middle of a Spark write fails the job deep inside the
    JVM; this finds it there, so that the job says "worth a retry" (exit 75) and not "bug".
    """
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        e = pending.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, (StorageUnreachableError, ConnectionError)) or "ConnectionError" in type(e).__name__:
            return str(e).splitlines()[0] if str(e) else type(e).__name__
        java: Any = getattr(e, "java_exception", None)
        for _ in range(32):  # the JVM's cause chain, bounded
            if java is None:
                break
            try:
                text = str(java.toString())
                java = java.getCause()
            except Exception:  # the gateway is gone: nothing more to learn from the JVM
                break
            for name in UNREACHABLE_JAVA:
                if name in text:
                    return text[text.index(name) :].splitlines()[0][:300]
        context = None if e.__suppress_context__ else e.__context__  # `raise ... from None` hides it
        pending += [c for c in (e.__cause__, context) if c is not None]
    return None


def exists(path: str) -> bool:
    fs, inner = fs_path(path)
    return bool(_call(path, "reach", fs.exists, inner))


def is_file(path: str) -> bool:
    fs, inner = fs_path(path)
    return bool(_call(path, "reach", fs.isfile, inner))


def list_dirs(path: str) -> list[str]:
    """Names of the sub-folders of ``path`` (empty when it does not exist)."""
    fs, inner = fs_path(path)
    if not _call(path, "reach", fs.exists, inner):
        return []
    entries = _call(path, "list", fs.ls, inner, detail=True)
    return sorted(name(e["name"]) for e in entries if e["type"] == "directory")


def list_files(path: str) -> list[str]:
    """Every data file under ``path`` (or ``path`` itself when it is a file), in the same form as
    ``path`` (a local path or a URL), sorted. Names under it that start with ``_`` or ``.`` are
    skipped, as Hadoop's readers skip them (``_SUCCESS``, ``.crc``, staging folders)."""
    fs, inner = fs_path(path)
    if not _call(path, "reach", fs.exists, inner):
        raise FileNotFoundError(path)
    if _call(path, "reach", fs.isfile, inner):
        return [path]
    root = inner.rstrip("/")
    base = path.rstrip("/")
    out = []
    for found in _call(path, "list", fs.find, inner):
        rest = found[len(root) :].lstrip("/") if found.startswith(root) else found.rsplit("/", 1)[-1]
        if any(part.startswith(("_", ".")) for part in rest.split("/")):
            continue
        out.append(f"{base}/{rest}")
    return sorted(out)


def makedirs(path: str) -> None:
    fs, inner = fs_path(path)
    _call(path, "create", fs.makedirs, inner, exist_ok=True)


def read_bytes(path: str) -> bytes:
    fs, inner = fs_path(path)
    return _call(path, "read", fs.cat_file, inner)


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def write_bytes(path: str, data: bytes) -> None:
    """Write a small file whole: to a hidden sibling first, then renamed over ``path``, so a
    reader sees the old content or the new one, never a part."""
    fs, inner = fs_path(path)
    folder = parent(inner)
    _call(path, "create", fs.makedirs, folder, exist_ok=True)
    tmp = f"{folder}/.{name(inner)}-{uuid.uuid4().hex[:8]}"
    _call(path, "write", fs.pipe_file, tmp, data)
    if isinstance(fs, LocalFileSystem):
        os.replace(tmp, inner)
        return
    if fs.exists(inner):  # HDFS renames do not overwrite: readers retry on a missing file
        fs.rm(inner)
    _call(path, "write", fs.mv, tmp, inner)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def delete(path: str) -> None:
    fs, inner = fs_path(path)
    if _call(path, "reach", fs.exists, inner):
        _call(path, "delete", fs.rm, inner, recursive=True)


def rename(src: str, dst: str) -> None:
    """Move a file or folder (a metadata operation on HDFS and local disks)."""
    fs, a = fs_path(src)
    _, b = fs_path(dst)
    _call(dst, "write", fs.makedirs, parent(b), exist_ok=True)
    if isinstance(fs, LocalFileSystem):
        os.replace(a, b)
    elif _is_object_store(fs):
        _call(dst, "write", _copy_then_delete, fs, a, b)
    else:
        _call(dst, "write", fs.mv, a, b, recursive=True)


def _is_object_store(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "s3" in protocol


def _copy_then_delete(fs: fsspec.AbstractFileSystem, a: str, b: str) -> None:
    """An object store has no folders to rename: copy each object, then delete the originals.
    s3fs's own recursive move also copies the folder's name, a key that does not exist."""
    files = fs.find(a) or [a]  # [a]: a single object
    for f in files:
        fs.copy(f, b + f[len(a) :])
    fs.rm(a, recursive=True)


def replace(src: str, dst: str) -> None:
    """Put the folder ``src`` (written under a name no reader loads) in place of ``dst``."""
    if exists(dst):
        delete(dst)
    rename(src, dst)


def staging_name(path: str) -> str:
    """``<parent>/_staging-<name>``: where ``path`` is written before :func:`replace` puts it in place."""
    return join(parent(path), f"_staging-{name(path)}")


def check_writable(path: str) -> None:
    """Fail with one line naming ``path`` unless a file can be written and removed under it (an
    unreachable namenode, a read-only or missing mount), before any stage starts writing."""
    probe = join(normalize(path), f".probe-{uuid.uuid4().hex[:8]}")
    try:
        write_text(probe, "ok")
        delete(probe)
    except StorageError as exc:
        raise type(exc)(f"{normalize(path)} is not writable: {exc}") from None
    except OSError as exc:
        raise StorageError(f"{normalize(path)} is not writable: {exc.strerror or exc}") from None


def upload(local: str, path: str) -> None:
    """Copy a local file or folder to ``path`` (replacing what is there)."""
    if is_local(path):
        target = local_path(path)
        if os.path.abspath(local) == os.path.abspath(target):
            return
        if os.path.isdir(local):
            shutil.copytree(local, target, dirs_exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
            shutil.copy2(local, target)
        return
    fs, inner = fs_path(path)
    if os.path.isdir(local):
        _call(path, "write", fs.makedirs, inner, exist_ok=True)
        for root, _dirs, files in os.walk(local):
            rel = os.path.relpath(root, local)
            folder = inner if rel == "." else f"{inner}/{rel}"
            _call(path, "write", fs.makedirs, folder, exist_ok=True)
            for f in files:
                _call(path, "write", fs.put_file, os.path.join(root, f), f"{folder}/{f}")
    else:
        _call(path, "write", fs.makedirs, parent(inner), exist_ok=True)
        _call(path, "write", fs.put_file, local, inner)


def download(path: str, local: str) -> str:
    """Copy a file or folder at ``path`` into ``local`` (created); returns ``local``."""
    fs, inner = fs_path(path)
    if _call(path, "reach", fs.isdir, inner):
        os.makedirs(local, exist_ok=True)
        for entry in _call(path, "list", fs.find, inner, withdirs=True, detail=True).values():
            rel = posixpath.relpath(entry["name"], inner)
            target = os.path.join(local, rel)
            if entry["type"] == "directory":
                os.makedirs(target, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                _call(path, "read", fs.get_file, entry["name"], target)
    else:
        os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
        _call(path, "read", fs.get_file, inner, local)
    return local


@contextlib.contextmanager
def scratch(prefix: str = "interest-") -> Iterator[str]:
    """A private local folder in the temp directory, removed afterwards."""
    folder = tempfile.mkdtemp(prefix=prefix)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
    """A local path holding what is at ``path``: the path itself when local, else a scratch copy."""
    if is_local(path):
        yield local_path(path)
        return
    with scratch("interest-copy-") as folder:
        yield download(path, os.path.join(folder, name(path)))


@contextlib.contextmanager
def local_output(path: str) -> Iterator[str]:
    """A local folder to write ``path``'s contents into; uploaded to ``path`` when the block ends
    without an error (local paths are written in place)."""
    if is_local(path):
        os.makedirs(local_path(path), exist_ok=True)
        yield local_path(path)
        return
    with scratch("interest-out-") as folder:
        yield folder
        upload(folder, path)


def mirror(local: str, path: str) -> None:
    """Make the folder at ``path`` hold exactly the files of the local folder ``local``: new and
    changed files are copied, files gone locally are deleted (a checkpoint folder after a save).
    A no-op when ``path`` is ``local`` itself."""
    if is_local(path) and os.path.abspath(local_path(path)) == os.path.abspath(local):
        return
    fs, inner = fs_path(path)
    _call(path, "write", fs.makedirs, inner, exist_ok=True)
    remote = {
        posixpath.relpath(e["name"], inner): e["size"]
        for e in _call(path, "list", fs.find, inner, detail=True).values()
        if e["type"] == "file"
    }
    here = {}
    for root, _dirs, files in os.walk(local):
        for f in files:
            full = os.path.join(root, f)
            here[os.path.relpath(full, local).replace(os.sep, "/")] = full
    for rel, full in here.items():
        if remote.get(rel) != os.path.getsize(full) or rel.endswith("checkpoint"):
            target = f"{inner}/{rel}"
            _call(path, "write", fs.makedirs, parent(target), exist_ok=True)
            _call(path, "write", fs.put_file, full, target)
    for rel in set(remote) - set(here):
        _call(path, "delete", fs.rm, f"{inner}/{rel}")


def arrow_filesystem(path: str):
    """(pyarrow filesystem, inner path) for pyarrow's dataset readers on any URL."""
    import pyarrow.fs as pafs

    if is_local(path):
        return pafs.LocalFileSystem(), str(Path(local_path(path)).resolve())
    fs, inner = fs_path(path)
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), inner
