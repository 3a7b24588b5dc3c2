"""What both W3 ``swe`` apps share: the testers' protocol.

:mod:`nalar_plugin.bench.swe` (the trace and the LangGraph app) and
:mod:`nalar_plugin.bench.swe_futures` (the futures workflow) read a tester's
verdict the same way, so the constants live here, below both.
"""

from __future__ import annotations

__all__ = ["MAX_ATTEMPTS", "PASS"]

MAX_ATTEMPTS = 3  # the third attempt always passes
PASS = "PASS"  # a passing tester's answer starts with this
