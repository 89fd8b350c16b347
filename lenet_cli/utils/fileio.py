"""Atomic file writes: a crash or a kill mid-write never leaves a truncated file behind."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from lenet_cli.errors import OutputError


def ensure_dir(path: Path, option: str | None = "--output-dir") -> Path:
    """Create `path` (and parents) or raise OutputError saying why; `option` names the flag to change."""
    path = Path(path)
    hint = f"Choose a writable location with {option}." if option else "Choose a writable location."
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise OutputError(f"Cannot create directory {path}: {blocker} is a file, not a directory.", hint) from exc
        raise _output_error(path, exc, hint, what="create directory") from exc
    return path


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success rename it over `target`.

    The temporary file lives in the same directory so the final `os.replace` is an
    atomic rename on POSIX and Windows. On any error the temporary file is removed
    and a previous `target` is left untouched.
    """
    target = Path(target)
    ensure_dir(target.parent, option=None)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise _output_error(target, exc) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp makes the file 0600; give it the permissions a plain open() would (0666 minus umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        # fsync so that after a power cut the renamed file has its data, not zero bytes.
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _output_error(target, exc) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(target: Path, data: bytes) -> Path:
    """Write `data` to `target` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: Path, text: str) -> Path:
    """Write `text` (UTF-8) to `target` atomically."""
    return atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_with(target: Path, writer: Callable[[Path], None]) -> Path:
    """Let `writer` fill a temporary path, then move it over `target` atomically."""
    with atomic_path(target) as tmp:
        writer(tmp)
    return Path(target)


def _output_error(target: Path, exc: OSError, hint: str = "Choose a writable location.",
                  what: str = "write") -> OutputError:
    if exc.errno == errno.ENOSPC:
        return OutputError(f"Disk full while writing {target}.", "Free some space and run the command again.")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return OutputError(f"Cannot {what} {target}: permission denied.", hint)
    if exc.errno == errno.EROFS:
        return OutputError(f"Cannot {what} {target}: the file system is read-only.", hint)
    if exc.errno == errno.EISDIR:
        return OutputError(f"Cannot write {target}: it is a directory.", "Give a file name, not a folder.")
    return OutputError(f"Cannot {what} {target}: {exc.strerror or exc}.", hint)


def refuse_existing(path: Path, option: str, exist_ok: bool) -> None:
    """Raise OutputError if `path` exists, unless `exist_ok`: no command replaces a file it was not asked to.

    Called before any work, so a refused command has spent nothing and changed nothing.
    """
    if os.path.isdir(path):  # never replaced, asked or not
        raise OutputError(f"{option} {path} is a directory.", f"Give a file name with {option}.")
    if exist_ok or not os.path.lexists(path):
        return
    raise OutputError(f"{option} {path} exists already.", f"Add --exist-ok to replace it, or choose another {option}.")


def not_a_file(path: Path) -> str | None:
    """What `path` is when it is not a regular file ("a named pipe", "a folder", ...); None for a file.

    Uses stat, which never opens the path: opening a named pipe for reading blocks until a writer
    comes, and reading a device may never end. A path that does not exist is "missing".
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing"
    except OSError:
        return None  # cannot tell (permissions, a loop of links): opening it reports the real error
    if stat.S_ISREG(mode):
        return None
    for test, what in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return what
    return "not a regular file"
