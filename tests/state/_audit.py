"""Preloaded into the fault tests' ``dask worker`` processes (``--preload``).

An audit hook records every event (``open``, ``os.listdir``, ``sqlite3.connect``,
...) whose arguments name the path in ``NALAR_TEST_FORBIDDEN`` (the state
directory, which workers must never touch) or in ``NALAR_TEST_CANARY`` (a
control path a test opens on purpose, proving the hook works in the worker).
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

_WATCHED = {
    label: path
    for label, path in (("forbidden", os.environ.get("NALAR_TEST_FORBIDDEN")), ("canary", os.environ.get("NALAR_TEST_CANARY")))
    if path
}
_LOG = os.environ.get("NALAR_TEST_AUDIT_LOG")
_inside = threading.local()


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if not _LOG or getattr(_inside, "busy", False):
        return
    for arg in args:
        if isinstance(arg, os.PathLike):
            arg = os.fspath(arg)
        if not isinstance(arg, (str, bytes)):
            continue
        text = arg if isinstance(arg, str) else arg.decode(errors="replace")
        for label, path in _WATCHED.items():
            if path in text:
                _inside.busy = True  # writing the report raises events too
                try:
                    fd = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                    os.write(fd, f"{label}\t{event}\t{text}\t{os.getpid()}\n".encode())
                    os.close(fd)
                finally:
                    _inside.busy = False
                return


sys.addaudithook(_hook)
