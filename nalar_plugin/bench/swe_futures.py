"""W3 ``swe`` as the paper writes it: plain Python over futures, with agent and tool stubs.

The developer and tester agents are ``@agent`` stubs and documentation retrieval
a ``@tool`` stub; their model calls go to the engine components
(``rt.deploy(agent, engines)``) through ``rt.call``, so the controllers choose
the engine of each call when it is admitted. The workflow is ordinary async
Python: each subtask runs its own develop -> test loop, and a tester call takes
the developer's future as its input, so it is released the moment that code
exists, whatever the subtask's siblings are doing. There is no barrier.

The trace plays the models: a call's answer is the trace's answer for its key,
returned once the engine has generated it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ..context import active_runtime
from ..stubs import agent, tool
from .deploy import Ledger
from .env import Env
from .swe_common import MAX_ATTEMPTS, PASS
from .trace import Shared, TraceBook

__all__ = ["Run", "developer", "retrieve_docs", "run_job", "tester"]


# The app's rough estimate of the model time a subtask needs (three code-sized calls,
# a retry now and then) and a sub-job; size-based policies (srtf, lpt) order jobs by it.
EST_SUBTASK_S = 3.0
EST_SUBJOB_S = 12.0


async def _generate(rt: Any, run: Run, key: str, session: str | None = None, expected_s: float | None = None) -> str:
    """One model call of the trace on its agent's engine component; the model's answer."""
    step = run.book.model(key)
    options: dict[str, Any] = {"session": session} if session is not None else {}
    if expected_s is not None:
        options["expected_s"] = expected_s
    gen = await rt.call_with(step.agent, "generate", (step.prompt, step.output), {"session": step.session}, **options)
    run.ledger.add(gen)
    return step.content


class Run(Shared):
    """What the stubs need of the run: the trace book, the ledger, the time scale (passed by reference)."""

    def __init__(self, book: TraceBook, ledger: Ledger, time_scale: float) -> None:
        super().__init__()
        self.book, self.ledger, self.time_scale = book, ledger, time_scale


@tool(name="retrieve_docs", idempotent=True)
async def retrieve_docs(run: Run, key: str) -> str:
    """Look up documentation: the trace's latency and result for ``key``."""
    step = run.book.tool(key)
    await asyncio.sleep(step.latency_s * run.time_scale)
    run.ledger.tool()
    return step.content


@agent(name="developer_agent")
async def developer(run: Run, sub: str, attempt: int, expected_s: float | None = None) -> str:
    """Ask the model, retrieve the documentation it asks for, then write the code.

    The subtask is the developer's session (its context stays on one engine); it
    carries the job's expected service, so size-based policies see the job's size.
    """
    rt = active_runtime()
    key = f"{sub}/a{attempt}"
    await _generate(rt, run, f"{key}/ask", session=sub, expected_s=expected_s)
    for _, docs_key, _ in run.book.model(f"{key}/ask").tool_calls:
        await retrieve_docs(run, docs_key)
    return await _generate(rt, run, f"{key}/write", session=sub, expected_s=expected_s)


@agent(name="tester_agent")
async def tester(run: Run, key: str, code: str) -> str:
    """Test the code; the answer starts with ``PASS`` or says what to fix."""
    return await _generate(active_runtime(), run, key)


async def _subtask(env: Env, run: Run, sub: dict[str, str], expected_s: float) -> dict[str, str]:
    """Develop and test one subtask until its test passes; a sub-job is planned first."""
    if sub["kind"] == "plan":
        nested = await _plan(env, run, sub["id"], expected_s)
        await tester(run, f"{sub['id']}/test", f"integrated {sub['id']}")
        return {**nested, sub["id"]: f"integrated {sub['id']}"}
    for attempt in range(MAX_ATTEMPTS):
        code: Any = developer(run, sub["id"], attempt, expected_s)  # a future (the stub's type hides it)
        # The tester takes the code future itself: it is released when the code exists.
        verdict = await tester(run, f"{sub['id']}/a{attempt}/test", code)
        if str(verdict).startswith(PASS):
            return {sub["id"]: str(await code)}
    raise RuntimeError(f"subtask {sub['id']} failed {MAX_ATTEMPTS} tests")  # the trace never does this


async def _plan(env: Env, run: Run, plan: str, expected_s: float | None = None) -> dict[str, str]:
    """Plan, then solve every subtask at once; the top plan sets the job's expected service."""
    answer = await _generate(env.rt, run, f"{plan}/plan")
    subtasks = json.loads(answer)["subtasks"]
    if expected_s is None:
        # Wall seconds, as the controllers count attained service.
        model_s = sum(EST_SUBJOB_S if s["kind"] == "plan" else EST_SUBTASK_S for s in subtasks)
        expected_s = model_s * run.time_scale
    async with env.rt.session(plan.split("/")[0], expected_s=expected_s):
        done = await asyncio.gather(*(_subtask(env, run, s, expected_s) for s in subtasks))
    return {k: v for d in done for k, v in d.items()}


async def run_job(env: Env, job: str) -> dict[str, str]:
    """Run one job as a nalar session; return the code of every subtask that passed."""
    run = env.shared.get("swe_run")
    if run is None:
        run = env.shared["swe_run"] = Run(env.dep.book, env.dep.ledger, env.time_scale)
    async with env.rt.session(job):
        return await _plan(env, run, job)
