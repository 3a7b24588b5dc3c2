"""Running one call under the journal: look up, run, stage, commit.

The task wrapper (:mod:`nalar_plugin._task`) hands every call body to
:func:`run_sync` or :func:`run_async`, which do this:

1. A *journaled* call (a stub that is not ``idempotent=True``) looks up
   ``(idempotency key, argument hash)`` in the journal. If it is there, the call
   returns the recorded result and its body does not run. Otherwise it claims
   the call; if another live execution already holds the claim, it waits for
   that one to commit and then returns its result.
2. The body runs with a fresh :class:`~nalar_plugin.state.managed.CallScope`:
   its ``managed_dict``/``managed_list`` writes are staged, not written.
3. If the body raises, nothing is written, the claim is released, and the
   exception is the call's result (a retry, if any, starts from the committed
   state).
4. Otherwise the result and the staged writes are committed in one store
   transaction. If another execution of the same call committed first (one
   that took over the claim of a holder thought dead), this execution's writes
   are dropped and the recorded result is returned instead.

Which calls are journaled: ``@tool`` and ``@agent`` stubs alike, unless
declared ``idempotent=True``. An idempotent call runs its body every time and
records no result; its staged writes are still committed atomically when it
succeeds, so they are applied again each time it runs. Not journaled either:
methods of hosted objects (class stubs, factory-made component instances),
whose state lives in their worker's memory, and calls to deployed endpoints
(``rt.deploy`` with objects: engines, chat models), outside services that
answer for their own effects.

The limit of exactly-once: the journal covers a call's *result* and its
*managed-state writes*. An effect the body performs by itself (a file write,
an HTTP request) happens when the body runs. If the process running the body
dies after such an effect and before the commit, the retried call runs the
body again and the effect repeats, unless the tool itself makes it idempotent
(for example by sending ``current_call().idempotency_key`` as the remote
service's idempotency key). Claims keep two *live* executions of one call from
running the body side by side; a claim left by a dead process is taken over.
Once a call has committed, its body never runs again for the same key and
arguments: not on retry, not on replay, not in a resumed run.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from distributed import rejoin, secede

from nalar_plugin.context import CallContext
from nalar_plugin.errors import SerializationError
from nalar_plugin.future import _in_task_thread
from nalar_plugin.state._encoding import dumps_value
from nalar_plugin.state.access import StateAccess, access_for
from nalar_plugin.state.journal import DONE, RUN, UNGUARDED, JournalRecord, arg_hash
from nalar_plugin.state.managed import CallScope
from nalar_plugin.state.serde import default_serde

__all__ = ["is_journaled", "run_async", "run_sync"]

logger = logging.getLogger(__name__)

# Hashing only serialises, and serialising does not depend on the allowlist a
# Runtime adds for loading: one serde hashes alike in every process, before any
# round trip to the scheduler.
_HASH_SERDE = default_serde()
# Waiting for another execution of the same call to commit: first and longest pause.
_FIRST_WAIT = 0.02
_MAX_WAIT = 0.5


def is_journaled(target: Any, ctx: CallContext) -> bool:
    """Whether a call of ``target`` is journaled (see the module docstring)."""
    from nalar_plugin._task import CreateTarget, MethodTarget
    from nalar_plugin.scheduler.components import EndpointTarget

    directives = getattr(target, "directives", None)
    if directives is None or directives.idempotent or ctx.idempotency_key is None:
        return False
    # A hosted object's state is in its worker's memory, so replaying a method's
    # result would not replay its effect on the object; a deployed endpoint is
    # an outside service that answers for its own effects.
    return not isinstance(getattr(target, "fn", target), (CreateTarget, MethodTarget, EndpointTarget))


class _Run:
    """One execution of one call: its access, key and hash."""

    def __init__(self, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any], ctx: CallContext, token: str) -> None:
        self.ctx = ctx
        self.access: Callable[[], StateAccess] = functools.cache(lambda: access_for(token))
        self.key = ctx.idempotency_key if is_journaled(target, ctx) else None
        self.hash = UNGUARDED
        if self.key is not None:
            self.hash = arg_hash(_HASH_SERDE, args, kwargs)
        self.scope = CallScope(ctx.session, self.access)
        self.owner = self.access().new_owner() if self.key is not None else ""

    def give_up(self) -> None:
        """Release the claim of an execution that will not commit (best effort)."""
        if self.key is None:
            return
        try:
            self.access().release(self.key, self.hash, self.owner)
        except Exception as exc:  # the body's own error matters more
            logger.warning("call %s could not release its claim on %s: %s", self.ctx.call_id, self.key, exc)

    async def agive_up(self) -> None:
        """:meth:`give_up` from async code."""
        if self.key is None:
            return
        try:
            await self.access().arelease(self.key, self.hash, self.owner)
        except Exception as exc:
            logger.warning("call %s could not release its claim on %s: %s", self.ctx.call_id, self.key, exc)

    def replay(self, rec: JournalRecord) -> Any:
        logger.debug("call %s (%s) replays its journaled result (attempt %d)", self.ctx.call_id, self.key, rec.attempt)
        return rec.value(self.access().serde)

    def request(self, result: Any) -> dict[str, Any] | None:
        """What to commit, or ``None`` when there is nothing to commit."""
        if self.key is None and not self.scope.dirty:
            return None
        encoded = None
        if self.key is not None:
            ctx = self.ctx
            try:
                encoded = dumps_value(self.access().serde, result, what="the result")
            except SerializationError as exc:
                raise SerializationError(
                    f"call {ctx.call_id} of {ctx.component}.{ctx.method} (idempotency key {self.key!r}) "
                    f"returned a value the journal cannot store: {exc}. Return data the state serde can "
                    "encode, or declare the component idempotent=True to run it without the journal; "
                    "nothing of this call was written"
                ) from exc
        return {
            "key": self.key, "arg_hash": self.hash, "session": self.ctx.session, "call_id": self.ctx.call_id,
            "attempt": self.ctx.attempt, "result": encoded, "ops": self.scope.encoded_ops(),
        }

    def outcome(self, result: Any, rec: JournalRecord | None, committed: bool) -> Any:
        if committed or rec is None:
            return result
        logger.info("call %s (%s): another execution committed first; returning its result", self.ctx.call_id, self.key)
        return rec.value(self.access().serde)


def run_sync(fn: Callable[..., Any], target: Any, args: tuple[Any, ...], kwargs: dict[str, Any], ctx: CallContext, token: str) -> Any:
    """Run a synchronous body under the journal (see the module docstring)."""
    run = _Run(target, args, kwargs, ctx, token)
    if run.key is not None:
        wait, seceded = _FIRST_WAIT, False
        try:
            while True:
                state, rec = run.access().begin(run.key, run.hash, run.owner)
                if state == DONE and rec is not None:
                    return run.replay(rec)
                if state == RUN:
                    break
                if not seceded and _in_task_thread():
                    # The holder may itself wait for nested calls that need this slot.
                    secede()
                    seceded = True
                time.sleep(wait)  # another live execution holds the call: await its commit
                wait = min(wait * 2, _MAX_WAIT)
        finally:
            if seceded:
                rejoin()
    try:
        handle = run.scope.activate()
        try:
            result = fn(*args, **kwargs)
        finally:
            CallScope.deactivate(handle)
        request = run.request(result)
        if request is None:
            return result
        rec, committed = run.access().commit(**request)
    except BaseException:
        run.give_up()
        raise
    return run.outcome(result, rec, committed)


async def run_async(fn: Callable[..., Any], target: Any, args: tuple[Any, ...], kwargs: dict[str, Any], ctx: CallContext, token: str) -> Any:
    """Run an ``async def`` body under the journal (see the module docstring)."""
    run = _Run(target, args, kwargs, ctx, token)
    if run.key is not None:
        wait = _FIRST_WAIT
        while True:
            state, rec = await run.access().abegin(run.key, run.hash, run.owner)
            if state == DONE and rec is not None:
                return run.replay(rec)
            if state == RUN:
                break
            await asyncio.sleep(wait)
            wait = min(wait * 2, _MAX_WAIT)
    try:
        handle = run.scope.activate()
        try:
            result = await fn(*args, **kwargs)
        finally:
            CallScope.deactivate(handle)
        request = run.request(result)
        if request is None:
            return result
        rec, committed = await run.access().acommit(**request)
    except BaseException:
        await run.agive_up()
        raise
    return run.outcome(result, rec, committed)
