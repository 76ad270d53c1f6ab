"""LocalObjectStore: the object store as a directory tree (the embedded default).

Each key is a file under ``root``.  Writes go to ``root/.tmp`` first, are fsynced and renamed
into place (and the directory fsynced), so a reader or a crash never sees half an object;
``put_if_absent`` uses ``link(2)``, which fails atomically if the key already exists.

Objects are tenants' workspace data: files are 0600 and directories 0700 whatever the
process's umask, and a root left readable by an older version is tightened when the store is
opened (the root's 0700 alone keeps other users out of everything below it).
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from mags.errors import StorageError
from mags.storage.objectstore import ObjectInfo, ObjectMissing, validate_key

_TMP = ".tmp"
_COPY_BUF = 4 << 20
_FILE_MODE = 0o600
_DIR_MODE = 0o700


def _private_dirs(path: Path) -> None:
    """``mkdir -p`` with every directory it creates 0700 (``Path.mkdir`` gives parents 0777 & ~umask)."""
    if path.is_dir():
        return
    _private_dirs(path.parent)
    try:
        path.mkdir(mode=_DIR_MODE)  # a umask only removes bits: never looser than 0700
    except FileExistsError:
        pass  # another writer made it meanwhile


def _tighten(path: Path) -> None:
    """Drop group/other bits of an existing directory (one made by an older version)."""
    mode = path.stat().st_mode
    if mode & 0o077:
        os.chmod(path, mode & 0o700)


class LocalObjectStore:
    """An object store in a local directory; safe for many threads and processes at once."""

    remote = False

    def __init__(self, root: str | Path, *, fsync: bool = True) -> None:
        self.root = Path(root)
        self._fsync = fsync
        try:
            _private_dirs(self.root / _TMP)
            _tighten(self.root)
            _tighten(self.root / _TMP)
        except OSError as exc:
            raise StorageError(f"cannot create object store at {self.root}: {exc}") from exc

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"

    # ------------------------------------------------------------------ helpers
    def path_of(self, key: str) -> Path:
        """The file that holds ``key`` (the key is validated, so it stays under root)."""
        validate_key(key)
        if key == _TMP or key.startswith(_TMP + "/"):
            raise StorageError(f"bad object key {key!r}")
        return self.root / key

    def _tmp_path(self) -> Path:
        return self.root / _TMP / f"{os.getpid()}-{os.urandom(8).hex()}"

    def _sync_dir(self, path: Path) -> None:
        if not self._fsync:
            return
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _write_tmp(self, chunks: Iterable[bytes | memoryview]) -> Path:
        tmp = self._tmp_path()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE)
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            if self._fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        return tmp

    def _publish(self, tmp: Path, dest: Path, *, exclusive: bool) -> bool:
        try:
            _private_dirs(dest.parent)
            if exclusive:
                try:
                    os.link(tmp, dest)
                except FileExistsError:
                    return False
                finally:
                    tmp.unlink(missing_ok=True)
            else:
                os.replace(tmp, dest)
            self._sync_dir(dest.parent)
            return True
        except OSError:
            tmp.unlink(missing_ok=True)
            raise

    # ------------------------------------------------------------------ writes
    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically."""
        dest = self.path_of(key)
        try:
            self._publish(self._write_tmp([data]), dest, exclusive=False)
        except OSError as exc:
            raise StorageError(f"cannot write object {key}: {exc}") from exc

    def put_file(self, key: str, path: str | Path) -> None:
        """Copy a local file into the store under ``key`` atomically."""
        dest = self.path_of(key)

        def chunks() -> Iterator[bytes]:
            with open(path, "rb") as src:
                while block := src.read(_COPY_BUF):
                    yield block

        try:
            self._publish(self._write_tmp(chunks()), dest, exclusive=False)
        except OSError as exc:
            raise StorageError(f"cannot write object {key} from {path}: {exc}") from exc

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Store ``data`` unless ``key`` exists; True if this call created it."""
        dest = self.path_of(key)
        try:
            if dest.exists():
                return False
            return self._publish(self._write_tmp([data]), dest, exclusive=True)
        except OSError as exc:
            raise StorageError(f"cannot write object {key}: {exc}") from exc

    # ------------------------------------------------------------------ reads
    def get(self, key: str) -> bytes:
        """Return the whole object."""
        path = self.path_of(key)
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError as exc:
            raise ObjectMissing(f"no object {key}") from exc
        except OSError as exc:
            raise StorageError(f"cannot read object {key}: {exc}") from exc

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Return ``length`` bytes of the object from ``offset``."""
        path = self.path_of(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise ObjectMissing(f"no object {key}") from exc
        except OSError as exc:
            raise StorageError(f"cannot read object {key}: {exc}") from exc
        try:
            if offset < 0:  # a suffix range, like HTTP's "bytes=-N"
                offset = max(0, os.fstat(fd).st_size + offset)
            return os.pread(fd, length, offset)
        except OSError as exc:
            raise StorageError(f"cannot read object {key}: {exc}") from exc
        finally:
            os.close(fd)

    def get_to_file(self, key: str, path: str | Path) -> None:
        """Copy an object to a local file (temp file + rename)."""
        src = self.path_of(key)
        dest = Path(path)
        tmp = dest.with_name(f".{dest.name}.{os.urandom(4).hex()}.part")
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        except FileNotFoundError as exc:
            tmp.unlink(missing_ok=True)
            if not src.exists():
                raise ObjectMissing(f"no object {key}") from exc
            raise StorageError(f"cannot copy object {key} to {dest}: {exc}") from exc
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"cannot copy object {key} to {dest}: {exc}") from exc

    def exists(self, key: str) -> bool:
        """True if the object exists."""
        return self.path_of(key).is_file()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield the objects whose key starts with ``prefix``."""
        if ".." in prefix.split("/") or prefix.startswith("/"):
            raise StorageError(f"bad prefix {prefix!r}")
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base if base else self.root
        try:
            yield from self._walk(start, base, prefix)
        except OSError as exc:
            raise StorageError(f"cannot list objects under {prefix!r}: {exc}") from exc

    def _walk(self, directory: Path, rel: str, prefix: str) -> Iterator[ObjectInfo]:
        try:
            it = os.scandir(directory)
        except (FileNotFoundError, NotADirectoryError):
            return
        with it:
            entries = list(it)
        for entry in entries:
            key = f"{rel}/{entry.name}" if rel else entry.name
            if not rel and entry.name == _TMP:
                continue
            if entry.is_dir(follow_symlinks=False):
                # Descend only where keys below could still match the prefix.
                if key.startswith(prefix) or prefix.startswith(key + "/"):
                    yield from self._walk(Path(entry.path), key, prefix)
            elif key.startswith(prefix):
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted while we listed
                yield ObjectInfo(key, st.st_size, st.st_mtime)

    # ------------------------------------------------------------------ deletes
    def delete(self, key: str) -> None:
        """Delete an object (missing is fine)."""
        try:
            self.path_of(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot delete object {key}: {exc}") from exc

    def delete_many(self, keys: Iterable[str]) -> None:
        """Delete many objects."""
        for key in keys:
            self.delete(key)

    def cleanup_tmp(self, older_than_s: float) -> int:
        """Remove temp files left by crashed writers; return how many were removed."""
        removed = 0
        cutoff = time.time() - older_than_s
        try:
            with os.scandir(self.root / _TMP) as it:
                for entry in it:
                    try:
                        if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                            os.unlink(entry.path)
                            removed += 1
                    except FileNotFoundError:
                        continue
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise StorageError(f"cannot clean {self.root / _TMP}: {exc}") from exc
        return removed
