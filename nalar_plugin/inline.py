"""Inline calls: adapter calls whose caller runs the body, once the controllers admit it.

:meth:`nalar_plugin.calls.CallPath.submit_inline` makes an :class:`InlineCall`; its
caller waits on the call's :class:`Gate` (a thread event, or a future of the
caller's event loop) and runs the body in :class:`Running`, the call's context.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Protocol

from .context import CallSink, enter_call, exit_call
from .execution import ERROR, OK, Outcome
from .future import Future, waiting
from .scheduler.controller import Call, LocalController
from .state.managed import CallScope

__all__ = ["Gate", "InlineCall", "InlinePath", "Running"]


class InlinePath(Protocol):
    """What an inline call needs of the call path."""

    sink: CallSink

    @property
    def state_access(self) -> Any: ...

    def _on_outcome(self, call: Call, outcome: Outcome) -> None: ...


class Gate:
    """What an inline call's caller waits on until the call is admitted."""

    __slots__ = ("event", "instance", "loop", "waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.loop = loop
        self.event = threading.Event() if loop is None else None
        self.waiter: asyncio.Future[None] | None = loop.create_future() if loop is not None else None
        self.instance: LocalController | None = None

    def open(self, instance: LocalController | None) -> None:
        if instance is not None:
            self.instance = instance
        if self.event is not None:
            self.event.set()
            return
        assert self.loop is not None and self.waiter is not None
        waiter = self.waiter
        try:
            same = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            same = False
        if same:
            if not waiter.done():
                waiter.set_result(None)
            return
        try:
            self.loop.call_soon_threadsafe(_release_waiter, waiter)
        except RuntimeError:  # the caller's loop closed: nobody waits any more
            pass


def _release_waiter(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class InlineCall:
    """An adapter call whose caller runs the body itself, once the controllers admit it.

    Made by :meth:`CallPath.submit_inline`. The caller waits with
    :meth:`admitted` (or ``await`` :meth:`aadmitted`); ``True`` means run the
    body now, inside :meth:`running`, then report with :meth:`finish` or
    :meth:`fail` and take the call's value from :attr:`future` (the journal may
    answer with an earlier execution's committed result). ``False`` means the
    future is already done: a replay from the journal, a veto, a failed input.
    """

    def __init__(self, path: InlinePath, call: Call, gate: Gate) -> None:
        self._path = path
        self.call = call
        self._gate = gate
        self.future: Future = call.future

    @property
    def endpoint(self) -> Any:
        """The address of the instance the call was admitted to (a deployed model, ...)."""
        instance = self._gate.instance
        return None if instance is None else instance.address

    def admitted(self) -> bool:
        """Block until the call is admitted (True) or done without running (False)."""
        if not self.future.done():
            assert self._gate.event is not None
            with waiting():
                self._gate.event.wait()
        return not self.future.done()

    async def aadmitted(self) -> bool:
        """Wait until the call is admitted (True) or done without running (False)."""
        waiter = self._gate.waiter
        if not self.future.done() and waiter is not None:
            try:
                await waiter
            except asyncio.CancelledError:
                self.future.cancel()
                raise
        return not self.future.done()

    def running(self) -> Running:
        """The context in which the caller runs the body: the call's context variables and state scope."""
        return Running(self._path, self.call)

    def value(self) -> Any:
        """The call's value once it is done (a commit is short: this may block an event loop briefly)."""
        self.future._block()
        return self.future.value()

    def finish(self, value: Any, ops: bytes | None = None) -> None:
        """Report the body's value (and its staged writes)."""
        self._path._on_outcome(self.call, Outcome(OK, value, ops))

    def fail(self, exc: BaseException) -> None:
        """Report the body's exception."""
        self._path._on_outcome(self.call, Outcome(ERROR, exc))


class Running:
    def __init__(self, path: InlinePath, call: Call) -> None:
        self._path = path
        self._call = call
        self.scope = CallScope(call.context.session, path.state_access)
        self._tokens: Any = None
        self._handle: Any = None

    def __enter__(self) -> CallScope:
        self._tokens = enter_call(self._call.context, self._path.sink)
        self._handle = self.scope.activate()
        return self.scope

    def __exit__(self, *exc: Any) -> None:
        CallScope.deactivate(self._handle)
        exit_call(self._tokens)
