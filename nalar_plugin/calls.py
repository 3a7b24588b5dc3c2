"""The call path: the one way every call goes, from its future to its result.

Stubs, ``rt.call``, hosted objects and the LangChain adapters (callback,
middleware, ToolNode hooks) all make calls through :meth:`CallPath.submit`:

1. **make**: the call's context (session, parent, dependencies, priority,
   deadline, idempotency key), its :class:`~nalar_plugin.future.Future` and its
   :class:`~nalar_plugin.scheduler.controller.Call`; the ``nalar_call_created``
   and ``nalar_call_veto`` hooks.
2. **release**: once every input future is done (a push, never a poll), the
   inputs are materialised; a journaled call is looked up (a committed call
   returns its recorded result and never runs again) and claimed, so two live
   executions of one call never run side by side.
3. **admit**: the local controllers queue the call and admit it to an instance
   when it has a free slot (late binding, priorities, migration).
4. **run**: a worker call goes to the executor of the worker the dispatcher
   picks; an *inline* call (an adapter call whose objects stay where they live)
   is run by its caller, who waited for the admission.
5. **commit**: the result and the body's staged managed-state writes are
   committed together in the journal (group commit, off the caller's thread).
6. **finish**: the slot is freed (the next call is admitted at once), the
   future resolves, its consumers are released.

A worker that dies takes its calls with it: the one retry path
(:meth:`CallPath._retry`) runs them again elsewhere, under the journal, with
the ``nalar_should_retry`` hook and ``nalar.retries``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

from .context import CallContext, CallSink, _options_var, make_context
from .errors import (
    CallCancelledError,
    CallVetoedError,
    RuntimeStateError,
    SerializationError,
    UnjournaledWarning,
    WorkerLostError,
)
from .execution import LOST, OK, Job, Outcome
from .future import CANCELLED, FINISHED, QUEUED, RUNNING, Future, collect_futures, replace_futures
from .graph import CallGraph
from .inline import Gate, InlineCall
from .plugins import PluginManager
from .scheduler.controller import Call, ControlPlane, LocalController
from .scheduler.leases import tokens_used
from .state._encoding import dumps_value
from .state.journal import JournalRecord, arg_hash
from .state.retry import RetryPolicy
from .state.service import StateService
from .stubs import CreateTarget, Directives, EndpointTarget, HostedAddress, MethodTarget

__all__ = ["CallPath"]

logger = logging.getLogger(__name__)

_SEQUENCES: Final = 20_000  # top-level key counters kept (one per session in use)


class CallPath:
    """Makes, releases, admits, runs, commits and finishes every call (see the module docstring).

    Args:
        token: The Runtime's token.
        plane: The local controllers.
        plugins: The plugin manager (hooks).
        state: The state service (journal).
        graph: The sessions' call graphs.
        retry: The retry policy.
        send: Sends a worker call's job: ``send(call, job, done, workers)``.
        cancel_remote: Asks the worker running a call to cancel its body.
        check_resources: Refuses ``resources=`` no worker offers.
        sink: Where nested calls of inline bodies go (the Runtime).
    """

    def __init__(self, *, token: str, plane: ControlPlane, plugins: PluginManager, state: StateService,
                 graph: CallGraph, retry: RetryPolicy,
                 send: Callable[[Call, Job, Callable[[Outcome], None], list[str] | None], None],
                 cancel_remote: Callable[[Call], None], check_resources: Callable[[dict[str, float], str], None],
                 sink: CallSink) -> None:
        self.token = token
        self.plane = plane
        self.plugins = plugins
        self.state = state
        self.graph = graph
        self.retry = retry
        self._send = send
        self._cancel_remote = cancel_remote
        self._check_resources = check_resources
        self.sink = sink
        self.closed = False
        self._lock = threading.Lock()
        self._calls: dict[str, Call] = {}  # calls not finished yet, by call id
        self._sequences: OrderedDict[str, int] = OrderedDict()
        self._warned: set[str] = set()
        self._idle = threading.Condition(self._lock)

    def state_access(self) -> Any:
        """The managed-state access of bodies that run in this process: the journal."""
        return self.state.journal

    # -- 1. make ---------------------------------------------------------------------
    def _sequence(self, scope: str) -> int:
        with self._lock:
            n = self._sequences.get(scope, -1) + 1
            self._sequences[scope] = n
            self._sequences.move_to_end(scope)
            if len(self._sequences) > _SEQUENCES:
                self._sequences.popitem(last=False)
            return n

    def forget_session(self, session: str) -> None:
        """Forget the session's key counters (its calls derive keys from 0 again)."""
        prefix = f"{session}/root"
        with self._lock:
            self._sequences.pop(prefix, None)

    def submit(self, target: Any, component: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any],
               directives: Directives, options: dict[str, Any], *, inline: bool = False,
               loop: asyncio.AbstractEventLoop | None = None) -> Call:
        """Make a call and start it on its way; return its :class:`Call` (``call.future`` at once).

        Args:
            target: What runs (a stub, a target, a job function).
            component: The component called.
            method: Its method.
            args: Positional arguments (futures inside are inputs).
            kwargs: Keyword arguments.
            directives: The component's directives.
            options: ``session``, ``priority``, ``deadline``, ``idempotency_key``,
                ``expected_s``, ``on_slo``, ``after`` (more inputs), ``extra``, ``workers``
                (pin), ``component_call``, ``context`` (made by a worker).
            inline: The caller runs the body (see :class:`InlineCall`).
            loop: An inline caller's event loop, if it awaits.

        Raises:
            RuntimeStateError: The Runtime is closed.
        """
        if self.closed:
            raise RuntimeStateError("this Runtime is closed")
        deps = collect_futures(args, [])
        collect_futures(kwargs, deps)
        deps.extend(options.get("after") or [])
        ctx: CallContext = options.get("context") or make_context(component, method, deps, options, self._sequence)
        fut = Future(ctx)
        call = Call(context=ctx, target=target, args=args, kwargs=kwargs, future=fut)
        call.directives = directives
        call.resources = dict(directives.resources)
        call.stateful = directives.stateful
        call.inline = inline
        call.workers = options.get("workers")
        extra = options.get("extra")
        if extra:
            call.extra.update(extra)
        if options.get("component_call"):
            call.extra["component_call"] = True
        hint = options.get("expected_s")
        if hint is None:
            hint = (_options_var.get() or {}).get("expected_s")  # from rt.session(..., expected_s=)
        if hint is not None:
            call.extra["expected_s"] = hint
        on_slo = options.get("on_slo") or (_options_var.get() or {}).get("on_slo")
        if on_slo is not None:  # the caller asked how an SLO is kept: reject or defer, its deadline an SLO
            call.extra["on_slo"] = on_slo
        if inline:
            call.gate = Gate(loop)
        if _journaled(target, directives, ctx, options):
            call.key = ctx.idempotency_key
        for d in deps:
            d.context.consumers.append(ctx.call_id)
        with self._lock:
            self._calls[ctx.call_id] = call
        self.graph.record(ctx)
        fut._canceller = functools.partial(self._cancel, call)
        # min_instances and max_instances act here: the component starts with that many
        # instances (each admitting max_concurrency calls) and never grows past the bound.
        self.plane.ensure_component(component, directives.max_concurrency, directives.min_instances,
                                    directives.max_instances)
        self.plugins.notify("nalar_call_created", call=call)
        try:
            reason = self.plugins.hook.nalar_call_veto(call=call) if self.plugins.implemented("nalar_call_veto") else None
            if call.resources:
                self._check_resources(call.resources, component)
        except Exception as exc:
            self._finish(call, "error", exception=exc)
            return call
        if reason is not None:
            self._finish(call, "error", exception=CallVetoedError(f"call {ctx.call_id} of {component} vetoed: {reason}"))
            return call
        self._when_ready(call, deps)
        return call

    def submit_inline(self, target: Any, component: str, method: str, args: tuple[Any, ...],
                      kwargs: dict[str, Any], directives: Directives, options: dict[str, Any],
                      loop: asyncio.AbstractEventLoop | None = None) -> InlineCall:
        """Make a call whose caller runs the body (see :class:`InlineCall`)."""
        call = self.submit(target, component, method, args, kwargs, directives, options, inline=True, loop=loop)
        return InlineCall(self, call, call.gate)

    # -- 2. release --------------------------------------------------------------------
    def _when_ready(self, call: Call, deps: list[Future]) -> None:
        waiting = [d for d in deps if not d.done()]
        if not waiting:
            self._release(call, deps)
            return
        lock = threading.Lock()
        remaining = [len(waiting)]

        def on_input(_: Future) -> None:
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                self._release(call, deps)

        for d in waiting:
            d.add_done_callback(on_input)

    def _release(self, call: Call, deps: list[Future]) -> None:
        if call.future.done():  # cancelled while it waited for its inputs
            return
        if self.closed:
            self._finish(call, "error", exception=RuntimeStateError("the Runtime closed before the call was admitted"))
            return
        for d in deps:
            if d.status != FINISHED:
                self._finish(call, "error", exception=d.exception() or RuntimeError(
                    f"input call {d.call_id} ended as {d.status}"))
                return
        if deps:
            call.args = replace_futures(call.args, _value)
            call.kwargs = replace_futures(call.kwargs, _value)
        call.future._set_state(QUEUED)
        if call.key is None:
            self.plane.enqueue(call)
            return
        call.arg_hash = arg_hash(self.state.serde, call.args, call.kwargs)
        self._check(call)

    def _check(self, call: Call) -> None:
        ctx = call.context
        key = call.key
        assert key is not None
        scoped = key.startswith(f"{ctx.session}/")
        self.state.check(key, call.arg_hash, ctx.session, scoped, lambda rec, err: self._checked(call, rec, err))

    def _checked(self, call: Call, record: JournalRecord | None, error: BaseException | None) -> None:
        if call.future.done():
            return
        if error is not None:
            self._finish(call, "error", exception=error)
            return
        if record is not None:
            self._replay(call, record)
            return
        assert call.key is not None
        holder = self.state.journal.claims.take(call.key, call.arg_hash, call, lambda: self._check(call))
        if holder is not None:
            # Another live execution of this very call runs now: once it commits or
            # gives up, check again (its record, or the claim for this call).
            return
        if self.closed:
            self._release_claim(call)
            self._finish(call, "error", exception=RuntimeStateError("the Runtime closed before the call was admitted"))
            return
        self.plane.enqueue(call)

    def _replay(self, call: Call, record: JournalRecord) -> None:
        logger.debug("call %s (%s) replays its journaled result", call.context.call_id, call.key)
        try:
            value = record.value(self.state.serde)
        except Exception as exc:
            self._finish(call, "error", exception=exc)
            return
        self._finish(call, FINISHED, value=value)

    def _release_claim(self, call: Call) -> None:
        if call.key is not None:
            self.state.journal.claims.release(call.key, call.arg_hash, call)

    # -- 4. run --------------------------------------------------------------------------
    def dispatch(self, call: Call, ctl: LocalController) -> None:
        """Run an admitted call on ``ctl``'s instance (the control plane's dispatcher)."""
        ctx = call.context
        self.plugins.notify("nalar_call_admitted", call=call, instance=ctl.instance)
        self.graph.mark(ctx, RUNNING)
        call.future._set_state(RUNNING)
        if call.future.done():  # cancelled as it was admitted
            self._complete(call)
            return
        if call.inline:
            call.gate.open(ctl)
            return
        target, args, workers = call.target, call.args, call.workers
        if call.extra.get("component_call"):
            # Late binding: only now is the instance known, so only now does the
            # call learn how to reach it.
            address = ctl.address
            if isinstance(address, HostedAddress):
                target = MethodTarget(address.object_id, ctx.method, bool(getattr(call.target, "is_async", False)))
                workers = [address.worker]
            else:
                args = (address, *args)
        self._run(call, target, args, workers)

    def _run(self, call: Call, target: Any, args: tuple[Any, ...], workers: list[str] | None) -> None:
        ctx = call.context
        is_async = bool(getattr(target, "is_async", False))
        # Each attempt runs on its own copy of the context: a retried body numbers
        # its nested calls from 0 again, and so derives the same keys.
        job = Job(ctx if not ctx.child_seq else ctx.override(child_seq=0), target, args, call.kwargs, is_async)
        self._send(call, job, lambda outcome: self._on_outcome(call, outcome), workers)

    # -- 5. commit ---------------------------------------------------------------------------
    def _on_outcome(self, call: Call, outcome: Outcome) -> None:
        cancelled = call.future.done()  # cancelled while it ran: its slot was held until now
        if outcome.kind == OK and "rate_reserved" in call.extra:  # a token limit settles what it reports
            call.extra["tokens_used"] = tokens_used(outcome.value)
        if outcome.kind == LOST and not cancelled and self._retry(call, outcome.value):
            return
        if outcome.kind != OK:
            self._release_claim(call)
            if cancelled:
                self._complete(call)
            else:
                self._finish(call, "error", exception=outcome.value)
            return
        value = outcome.value
        if call.key is None and not outcome.ops:
            if cancelled:
                self._complete(call)
            else:
                self._finish(call, FINISHED, value=value)
            return
        ctx = call.context
        result = None
        if call.key is not None:
            try:
                result = dumps_value(self.state.serde, value, what="the result")
            except SerializationError as exc:
                if call.extra.get("unjournaled_ok"):
                    self._unjournaled(call, exc)
                    self._release_claim(call)
                    call.key = None  # commit the staged writes, record no result
                    if not outcome.ops:
                        if cancelled:
                            self._complete(call)
                        else:
                            self._finish(call, FINISHED, value=value)
                        return
                    result = None
                else:
                    self._release_claim(call)
                    if cancelled:
                        self._complete(call)
                        return
                    self._finish(call, "error", exception=SerializationError(
                        f"call {ctx.call_id} of {ctx.component}.{ctx.method} (idempotency key {call.key!r}) "
                        f"returned a value the journal cannot store: {exc}. Return data the state serde can "
                        "encode, or declare the component idempotent=True to run it without the journal; "
                        "nothing of this call was written"))
                    return

        # An inline body without staged writes has nothing that depends on its
        # commit: its caller already holds the value, so the call is finished
        # now and the journal records it behind (its claim stays until then,
        # so a duplicate waits for the record; close() writes what is queued).
        early = call.inline and not outcome.ops and not cancelled
        if early:
            self._finish(call, FINISHED, value=value, committing=True)

        def committed(outcome_: Any, error: BaseException | None) -> None:
            # A body that ran to its end is committed even if its future was
            # cancelled meanwhile: the journal says what really happened.
            self._release_claim(call)
            if early:
                if error is not None:
                    logger.warning("call %s (%s): its result could not be journaled: %s", ctx.call_id,
                                   call.key, error)
                self._forget(call)
                return
            if cancelled:
                self._complete(call)
                return
            if error is not None:
                self._finish(call, "error", exception=error)
                return
            record, wrote = outcome_
            if wrote or record is None:
                self._finish(call, FINISHED, value=value)
                return
            logger.info("call %s (%s): another execution committed first; returning its result", ctx.call_id, call.key)
            self._replay(call, record)

        # A thread that is not an event loop writes the commit itself when the writer is idle.
        self.state.commit(committed, lead=not _on_loop(), key=call.key, arg_hash=call.arg_hash,
                          session=ctx.session, call_id=ctx.call_id, attempt=ctx.attempt, result=result,
                          ops=outcome.ops)

    def _unjournaled(self, call: Call, exc: BaseException) -> None:
        component = call.context.component
        with self._lock:
            if component in self._warned:
                return
            self._warned.add(component)
        warnings.warn(
            f"{component} returned a value the journal cannot store ({exc}); the app gets it as it is, "
            "but this call is not recorded, so a resumed run runs it again. Declare the component "
            "idempotent=True (rt.callback(directives=...)) or return data the state serde can encode.",
            UnjournaledWarning, stacklevel=6,
        )

    # -- 6. finish --------------------------------------------------------------------------
    def _complete(self, call: Call) -> None:
        if call.admitted:
            call.admitted = False
            self.plane.complete(call)

    def _finish(self, call: Call, state: str, *, value: Any = None, exception: BaseException | None = None,
                free_slot: bool = True, committing: bool = False) -> None:
        if free_slot:
            self._complete(call)
        fut = call.future
        if state == FINISHED:
            fut._finish(FINISHED, value=value)
        else:
            fut._finish(state, exception=exception)
        fut._canceller = None
        if call.gate is not None:
            call.gate.open(None)  # an inline caller that still waits learns the call is done
        self.graph.done(call.context, fut.status)
        self.plugins.notify("nalar_call_finished", call=call, status=fut.status,
                            error=exception if state != FINISHED else None)
        if not committing:  # a call whose commit is still queued stays in flight until it is written
            self._forget(call)

    def _forget(self, call: Call) -> None:
        with self._lock:  # last, so that drain() also waits for the hooks
            self._calls.pop(call.context.call_id, None)
            if not self._calls:
                self._idle.notify_all()

    def fail(self, call: Call, exc: BaseException) -> None:
        """Fail a call that could not be started (its dispatch raised)."""
        self._release_claim(call)
        self._finish(call, "error", exception=exc)

    # -- retries ------------------------------------------------------------------------------
    def _retry(self, call: Call, error: BaseException) -> bool:
        """Run a call whose worker died again, elsewhere; True if it will be.

        Never a call pinned to a worker (a hosted object's state died with it).
        The ``nalar_should_retry`` hook decides first; ``None`` leaves it to
        ``nalar.retries``.
        """
        if self.closed or call.workers or call.inline:
            return False
        ctl = self.plane.instances.get(call.instance or "")
        if call.extra.get("component_call") and isinstance(getattr(ctl, "address", None), HostedAddress):
            return False  # an instance hosted on the dead worker died with it
        ctx = call.context
        try:
            decision = self.plugins.hook.nalar_should_retry(call=call, error=error, attempt=ctx.attempt)
        except Exception as hook_exc:  # a decision hook's failure reaches the caller
            self._release_claim(call)
            self._finish(call, "error", exception=hook_exc)
            return True
        if decision is None:
            decision = self.retry.allows(ctx.attempt)
        if not decision:
            return False
        delay = self.retry.delay(ctx.attempt)
        ctx.attempt += 1
        logger.info("call %s lost its worker; attempt %d in %.2f s", ctx.call_id, ctx.attempt, delay)
        timer = threading.Timer(delay, self._rerun, args=(call,))
        timer.daemon = True
        call.timer = timer
        timer.start()
        return True

    def _rerun(self, call: Call) -> None:
        call.timer = None
        if call.future.done():
            self._complete(call)
            return
        if self.closed:
            self._release_claim(call)
            self._finish(call, "error", exception=RuntimeStateError(
                f"the Runtime closed while call {call.context.call_id} waited to be retried"))
            return
        ctl = self.plane.instances.get(call.instance or "")
        if ctl is None:
            self._release_claim(call)
            self._finish(call, "error", exception=WorkerLostError(
                f"call {call.context.call_id}: its instance is gone, so it cannot be retried"))
            return
        call.worker = None
        self.dispatch(call, ctl)

    # -- cancellation -------------------------------------------------------------------------
    def _cancel(self, call: Call, fut: Future) -> bool:
        if fut.done():
            return fut.cancelled()
        exc = CallCancelledError(f"call {call.context.call_id} of {call.context.component} was cancelled")
        if self.plane.cancel(call):  # queued: it never runs
            self._release_claim(call)
            self._finish(call, CANCELLED, exception=exc)
            return True
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None
            self._release_claim(call)
            self._finish(call, CANCELLED, exception=exc)
            return True
        if call.admitted and not call.inline:
            # Running: the body is cancelled on its worker; its slot is held until
            # it really ends (its outcome arrives), so capacity stays true.
            # The future first: the body's own CancelledError must find it cancelled.
            self._finish(call, CANCELLED, exception=exc, free_slot=False)
            self._cancel_remote(call)
            return True
        # Waiting for its inputs, or for the journal, or an inline call (its caller cancels the body).
        self._release_claim(call)
        self._finish(call, CANCELLED, exception=exc)
        return True

    # -- lifecycle --------------------------------------------------------------------------------
    def live(self, call_id: str) -> Call | None:
        """The unfinished call with this id, if any."""
        with self._lock:
            return self._calls.get(call_id)

    def in_flight(self) -> int:
        """Calls made and not finished."""
        with self._lock:
            return len(self._calls)

    def drain(self, timeout: float) -> bool:
        """Wait until every admitted call has finished (at most ``timeout``); True if none is left."""
        with self._lock:
            return self._idle.wait_for(lambda: not any(c.admitted for c in self._calls.values()), timeout)

    def close(self, timeout: float) -> None:
        """Stop making calls: queued ones fail now, running ones get ``timeout`` to finish."""
        self.closed = True
        with self._lock:
            # A finished call still in flight only waits for its commit, which the state's close writes.
            pending = [c for c in self._calls.values() if not c.admitted and not c.future.done()]
        closing = RuntimeStateError("the Runtime closed before the call ran")
        for call in pending:
            if call.timer is not None:
                call.timer.cancel()
                call.timer = None
                closing = RuntimeStateError(f"the Runtime closed while call {call.context.call_id} waited to be retried")
            self.plane.cancel(call)
            self._release_claim(call)
            self._finish(call, "error", exception=closing)
        self.drain(timeout)
        with self._lock:
            left = [c for c in self._calls.values() if not c.future.done()]
        for call in left:
            self._release_claim(call)
            self._finish(call, "error", exception=RuntimeStateError(
                f"the Runtime closed while call {call.context.call_id} was still running"))


def _on_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _value(fut: Future) -> Any:
    return fut.value()


def _journaled(target: Any, directives: Directives, ctx: CallContext, options: dict[str, Any]) -> bool:
    """Whether a call is journaled: a stub that is not ``idempotent=True``, with a key.

    Not journaled: methods of hosted objects (their state lives in their
    worker's memory, so replaying a result would not replay its effect on the
    object) and calls to deployed instances (outside services that answer for
    their own effects).
    """
    if directives.idempotent or ctx.idempotency_key is None or options.get("component_call"):
        return False
    body = getattr(target, "fn", target)
    return not isinstance(body, (CreateTarget, MethodTarget, EndpointTarget))
