"""Creation and validation of a nalar state directory and its marker file, and its errors.

The marker (``nalar-state.json``) names the format and its version. A directory
is adopted only if it is new or empty; one that holds other files but no marker
belongs to something else and is refused, so opening a wrong path never writes
into (or reads) another program's data.
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import diskcache

from nalar_plugin.errors import NalarError, StateCorruptedError, StateError, StateReadOnlyError

__all__ = ["FORMAT_VERSION", "MARKER_NAME", "is_read_only", "prepare_directory", "storage_errors"]

MARKER_NAME: Final = "nalar-state.json"
"""Name of the file that identifies a nalar state directory."""

FORMAT_VERSION: Final = 1
"""Version of the on-disk layout written by this code."""

_FORMAT_NAME: Final = "nalar-state"
_MARKER_TMP_PREFIX: Final = ".nalar-state.tmp-"


def is_read_only(exc: OSError) -> bool:
    """Whether an OS error means the location cannot be written.

    Args:
        exc: The error.

    Returns:
        ``True`` for permission and read-only file system errors.
    """
    return exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS)


def prepare_directory(path: Path) -> None:
    """Create or validate a state directory and its marker.

    Args:
        path: The directory.

    Raises:
        StateCorruptedError: Foreign or damaged directory.
        StateReadOnlyError: The directory cannot be created or written.
        StateError: Another OS error.
    """
    try:
        path.mkdir(mode=0o700, parents=True)
        # mkdir's mode is filtered by the umask; state may hold secrets, so
        # force owner-only access on a directory we created.
        os.chmod(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        if is_read_only(exc):
            raise StateReadOnlyError(
                f"cannot create the state directory {path}: {exc.strerror}"
            ) from exc
        raise StateError(f"cannot create the state directory {path}: {exc}") from exc
    if not path.is_dir():
        raise StateCorruptedError(f"{path} exists and is not a directory")
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise StateReadOnlyError(f"the state directory {path} is not writable")
    marker = path / MARKER_NAME
    if marker.exists():
        _check_marker(marker)
        return
    try:
        entries = [e for e in os.listdir(path) if not e.startswith(_MARKER_TMP_PREFIX)]
    except OSError as exc:
        raise StateError(f"cannot list the state directory {path}: {exc}") from exc
    if entries:
        shown = ", ".join(sorted(entries)[:5])
        raise StateCorruptedError(
            f"{path} is not a nalar state directory: it holds other files ({shown}) "
            f"but no {MARKER_NAME} marker; refusing to use it"
        )
    _write_marker(path)


def _write_marker(path: Path) -> None:
    """Write the marker atomically (temporary file, then rename)."""
    content = json.dumps({"format": _FORMAT_NAME, "version": FORMAT_VERSION})
    tmp = path / f"{_MARKER_TMP_PREFIX}{os.getpid()}-{time.monotonic_ns()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
        # Atomic: a process opening the directory at the same time sees either
        # no marker (and writes the same one) or the complete file.
        os.replace(tmp, path / MARKER_NAME)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if is_read_only(exc):
            raise StateReadOnlyError(
                f"cannot write to the state directory {path}"
            ) from exc
        raise StateError(f"cannot write the marker in {path}: {exc}") from exc


def _check_marker(marker: Path) -> None:
    """Refuse a marker that is unreadable, foreign or from a newer format."""
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise StateCorruptedError(
            f"the state marker {marker} is unreadable: {exc}"
        ) from exc
    if not isinstance(data, dict) or data.get("format") != _FORMAT_NAME:
        raise StateCorruptedError(f"{marker} is not a nalar state marker")
    version = data.get("version")
    if not isinstance(version, int) or version < 1:
        raise StateCorruptedError(f"the state marker {marker} has no valid version")
    if version > FORMAT_VERSION:
        raise StateCorruptedError(
            f"{marker.parent} was written by a newer nalar-plugin (format version "
            f"{version}; this version reads up to {FORMAT_VERSION})"
        )


@contextlib.contextmanager
def storage_errors(action: str, path: Path, timeout: float) -> Iterator[None]:
    """Map diskcache, SQLite and OS errors met while doing ``action`` in ``path`` to the nalar error classes."""
    try:
        yield
    except NalarError:
        raise
    except diskcache.Timeout as exc:
        raise StateError(
            f"could not {action}: timed out after {timeout:g}s waiting "
            f"for the lock on {path}"
        ) from exc
    except sqlite3.OperationalError as exc:
        message = str(exc).lower()
        if "readonly" in message or "read-only" in message:
            raise StateReadOnlyError(
                f"could not {action}: the state directory {path} is read-only"
            ) from exc
        if "locked" in message or "busy" in message:
            raise StateError(
                f"could not {action}: the database in {path} stayed locked "
                f"for more than {timeout:g}s"
            ) from exc
        if "malformed" in message or "no such table" in message:
            raise StateCorruptedError(
                f"could not {action}: the state database in {path} is "
                f"corrupted ({exc})"
            ) from exc
        raise StateError(f"could not {action} in {path}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        raise StateCorruptedError(
            f"could not {action}: the state database in {path} is "
            f"corrupted or not a database ({exc})"
        ) from exc
    except sqlite3.Error as exc:
        raise StateError(f"could not {action} in {path}: {exc}") from exc
    except OSError as exc:
        if is_read_only(exc):
            raise StateReadOnlyError(
                f"could not {action}: no write access to {path} ({exc})"
            ) from exc
        raise StateError(f"could not {action} in {path}: {exc}") from exc
