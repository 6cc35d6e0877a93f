"""Every file the tool reads or writes on a user's behalf goes through here.

Reading (`read_bytes`, `read_text`, `check_readable`): only regular files are opened; devices,
FIFOs, sockets and directories are refused by `os.stat` *before* anything is opened (reading
``/dev/zero`` never ends, opening a FIFO blocks until a writer appears), and every kind of file
has a size cap, checked before reading and again while reading (a file may grow).

Writing (`atomic_write_bytes`, `atomic_write_text`, `atomic_path`): the new content goes to a
temporary file in the same folder, is flushed to disk and renamed over the target
(`os.replace` is atomic within one file system), so a kill at any moment leaves either the old
file or the new one, never a truncated mix.

Run folders (`RunFolder`): a marker file names the command that made the folder and lists the
files it wrote; a command refuses a folder holding anything it did not write, and one process
at a time holds a folder (an OS file lock).

Fault injection (`fault_point`): with ``ARCHSPEC_FAULT=<point>:<n>`` in the environment the
process kills itself (SIGKILL, no clean-up) at the n-th time it reaches the named point; tests
use it to stop a run at an exact write or commit instead of on a timer.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from archspec.errors import SpecError

MiB = 1 << 20
GiB = 1 << 30

SIZE_LIMITS: dict[str, int] = {
    "spec": 4 * MiB,
    "search config": 4 * MiB,
    "COCO annotation file": 512 * MiB,
    "ONNX file": 2 * GiB,
    "checkpoint": 4 * GiB,
    "image": 256 * MiB,
    "latency table": 4 * GiB,
    "trial store": 16 * GiB,
    "run marker": 16 * MiB,
}
"""Largest file of each kind the tool reads (a spec of a few MiB is already enormous; the caps
stop a mistaken path, e.g. a disk image, from being read into memory)."""

_KIND_OF_MODE = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                 (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                 (stat.S_ISSOCK, "a socket"))


class FileRefused(SpecError):
    """A file that is not read (or written): missing, not a regular file, too large, not text.
    A `SpecError` (so a `ValueError`) whose source is the file."""

    def __init__(self, path: str | Path, message: str):
        super().__init__("", message, source=str(path))


def _describe_mode(mode: int) -> str:
    for test, name in _KIND_OF_MODE:
        if test(mode):
            return name
    return "not a regular file"


def _size_text(size: int) -> str:
    return f"{size / MiB:.1f} MiB" if size >= MiB else f"{size} bytes"


def _limit(kind: str, max_bytes: int | None) -> int:
    """The size cap of a `kind` of file (`SIZE_LIMITS`; 4 MiB for others), unless `max_bytes` is given."""
    return SIZE_LIMITS.get(kind, 4 * MiB) if max_bytes is None else max_bytes


def check_readable(path: str | Path, *, kind: str = "spec", max_bytes: int | None = None) -> Path:
    """`path` if it names a regular file no larger than the cap of `kind`; `FileRefused`
    otherwise. For readers that must open the path themselves (SQLite)."""
    path = Path(path)
    limit = _limit(kind, max_bytes)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise FileRefused(path, f"no such file (a {kind} was expected)") from None
    except NotADirectoryError:
        raise FileRefused(path, "no such file (a parent is not a directory)") from None
    except PermissionError:
        raise FileRefused(path, "permission denied") from None
    except OSError as exc:
        raise FileRefused(path, f"cannot read the file ({exc.strerror or type(exc).__name__})") from None
    _check_stat(path, info, kind, limit)
    return path


def _check_stat(path: Path, info: os.stat_result, kind: str, limit: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise FileRefused(path, f"is {_describe_mode(info.st_mode)}, not a regular file; a {kind} must be a file")
    if info.st_size > limit:
        raise FileRefused(path, f"is {_size_text(info.st_size)}; a {kind} may be at most {_size_text(limit)}")


@contextmanager
def open_checked(path: str | Path, *, kind: str = "spec",
                 max_bytes: int | None = None) -> Iterator[tuple[int, os.stat_result]]:
    """``(fd, stat)`` of a regular file of at most the cap of `kind`, open for reading, checked
    before and after opening (`stat` is the open file's): for readers that need only parts of a
    large file (`os.pread`), or that tell files apart by inode and times."""
    path = check_readable(path, kind=kind, max_bytes=max_bytes)
    limit = _limit(kind, max_bytes)
    try:
        # O_NONBLOCK: should the path have become a FIFO since the stat, opening does not block.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except PermissionError:
        raise FileRefused(path, "permission denied") from None
    except OSError as exc:
        raise FileRefused(path, f"cannot read the file ({exc.strerror or type(exc).__name__})") from None
    try:
        info = os.fstat(fd)
        _check_stat(path, info, kind, limit)  # the file opened is the file checked
        yield fd, info
    finally:
        os.close(fd)


def read_bytes(path: str | Path, *, kind: str = "spec", max_bytes: int | None = None) -> bytes:
    """The content of a regular file of at most the cap of `kind` (see `SIZE_LIMITS`)."""
    limit = _limit(kind, max_bytes)
    with open_checked(path, kind=kind, max_bytes=max_bytes) as (fd, _):
        try:
            with os.fdopen(os.dup(fd), "rb") as handle:
                data = handle.read(limit + 1)
        except OSError as exc:
            raise FileRefused(path, f"cannot read the file ({exc.strerror or type(exc).__name__})") from None
    if len(data) > limit:
        raise FileRefused(path, f"grew past {_size_text(limit)} while being read; a {kind} may be at most "
                                f"{_size_text(limit)}")
    return data


def read_text(path: str | Path, *, kind: str = "spec", max_bytes: int | None = None) -> str:
    """`read_bytes` decoded as UTF-8 (a byte-order mark is dropped)."""
    data = read_bytes(path, kind=kind, max_bytes=max_bytes)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileRefused(path, f"is not UTF-8 text (byte {exc.start})") from None


# -- atomic writes ---------------------------------------------------------------------------------
@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path next to `path` to write the new content to (it keeps `path`'s suffix, for
    writers that choose a format by it); on success it is flushed and renamed over `path`, on
    failure removed. The folder must exist."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a file", str(path))
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    try:  # mkstemp makes the file private; give it the mode of the file it replaces (or the umask's)
        os.fchmod(fd, stat.S_IMODE(os.stat(path).st_mode) if path.exists() else 0o666 & ~_UMASK)
    finally:
        os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync(tmp)
        fault_point("write")
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Replace `path` by `data` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Replace `path` by `text` (UTF-8) atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not sync folders; the rename is still atomic
        pass
    finally:
        os.close(fd)


# -- run folders -----------------------------------------------------------------------------------
MARKER = ".archspec-run.json"
LOCK = ".archspec-run.lock"
_OWN_NAMES = {MARKER, LOCK}


class RunFolderError(ValueError):
    """A run folder that cannot be used: written by something else, or in use."""


class RunFolder:
    """A folder a command writes its outputs to, held by this process until `close`.

    ``RunFolder(out, "search", outputs=...)`` creates the folder (or adopts an empty one), takes
    its lock and writes the marker. It refuses a folder whose marker names another command, and a
    folder holding files the marker does not list: the tool never writes into a folder of the
    user's own files. `record(name)` adds a file to the marker before it is written."""

    def __init__(self, path: str | Path, command: str):
        self.path = Path(path)
        self.command = command
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"{self.path}: exists and is not a folder")
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(self.path)
        try:
            self.files = self._adopt()
        except BaseException:
            self.close()
            raise

    def _adopt(self) -> set[str]:
        marker = self.path / MARKER
        present = {entry.name for entry in self.path.iterdir() if entry.name not in _OWN_NAMES}
        if marker.exists():
            try:
                data = json.loads(read_text(marker, kind="run marker"))
                command, files = data["command"], set(data["files"])
                if not isinstance(command, str) or not all(isinstance(f, str) for f in files):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                raise RunFolderError(f"{marker}: not a readable archspec run marker") from None
            if command != self.command:
                raise RunFolderError(f"{self.path}: is an `archspec {command}` folder, not one of "
                                     f"`archspec {self.command}`; choose another folder")
        else:
            files = set()
        for name in sorted(present - files):  # temporary files of a killed writer: ours, and no one writes now
            if _is_temporary(name, files | {MARKER}):
                (self.path / name).unlink(missing_ok=True)
                present.discard(name)
        foreign = sorted(name for name in present - files if not _is_companion(name, files))
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise RunFolderError(f"{self.path}: holds files archspec did not write ({shown}); choose an empty or "
                                 f"new folder")
        self._write_marker(files)
        return files

    def record(self, *names: str) -> None:
        """Note files this command is about to write (before writing them)."""
        new = set(names) - self.files
        if new:
            self.files |= new
            self._write_marker(self.files)

    def _write_marker(self, files: set[str]) -> None:
        import archspec

        data = {"command": self.command, "version": getattr(archspec, "__version__", "unknown"),
                "files": sorted(files)}
        text = json.dumps(data, indent=1) + "\n"
        marker = self.path / MARKER
        try:
            if marker.is_file() and marker.read_text(encoding="utf-8") == text:
                return  # unchanged: a resumed run leaves its marker as it was
        except (OSError, UnicodeDecodeError):
            pass
        atomic_write_text(marker, text)

    def close(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_companion(name: str, files: set[str]) -> bool:
    """Files the tool's own files bring along: SQLite's journals, our temporary files."""
    return any(name == f + suffix for f in files for suffix in ("-wal", "-shm", "-journal")) or \
        _is_temporary(name, files)


def _is_temporary(name: str, files: set[str]) -> bool:
    """A temporary file `atomic_path` makes for one of `files` (``.<stem>.<random>.tmp<suffix>``)."""
    return name.startswith(".") and any(
        name.startswith(f".{Path(f).stem}.") and name.endswith(f".tmp{Path(f).suffix}") for f in files)


def _lock(folder: Path) -> int:
    """An exclusive OS lock on the folder's lock file, held until the descriptor is closed (or
    the process dies: the OS releases it, so a killed run never leaves a stale lock)."""
    import fcntl

    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunFolderError(f"{folder}: another archspec process is using this folder; wait for it to finish") \
            from None
    return fd


@contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """An exclusive OS lock on `path` (created if missing) for the duration of the block
    (blocking: the holder is another process doing the same short job)."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# -- fault injection (tests only) -----------------------------------------------------------------
FAULT_ENV = "ARCHSPEC_FAULT"
_fault_hits: dict[str, int] = {}


def fault_point(point: str) -> None:
    """Kill this process (SIGKILL: no clean-up, as a power cut or the OOM killer would) at the
    n-th time it reaches `point` when ``ARCHSPEC_FAULT=<point>:<n>``; nothing otherwise. Points:
    ``write`` (an atomic write, its new content on disk, just before the rename) and ``commit``
    (a store transaction, just before it commits)."""
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    name, _, count = wanted.rpartition(":")
    if name != point:
        return
    _fault_hits[point] = _fault_hits.get(point, 0) + 1
    if str(_fault_hits[point]) == count.strip():
        os.kill(os.getpid(), signal.SIGKILL)
