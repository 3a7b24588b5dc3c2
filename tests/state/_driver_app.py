"""A LangGraph app served by nalar, run as its own process by the driver-restart test.

``python -m tests.state._driver_app STATE_DIR LOG OUT THREAD...`` runs one graph
per thread id, concurrently, with ``rt.checkpointer()``. A thread that has a
checkpoint resumes from it. Each step calls a tool
with an explicit idempotency key ``{thread_id}/step-{i}``, the way the adapters
key tool calls by ``{thread_id}/{tool_call_id}``. The final states go to OUT.
"""

from __future__ import annotations

import json
import operator
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph

import nalar_plugin as nl
from tests.state import _faults as fw

STEPS = 5
PAUSE = 0.3


class Progress(TypedDict):
    thread: str
    results: Annotated[list[int], operator.add]


def build(rt: nl.Runtime, log: str) -> Any:
    builder = StateGraph(Progress)

    def make_step(i: int) -> Any:
        def step(state: Progress) -> dict[str, list[int]]:
            thread = state["thread"]
            tool = fw.record.options(idempotency_key=f"{thread}/step-{i}", session=thread)
            return {"results": [tool(log, thread, i, PAUSE).result()]}

        return step

    previous = START
    for i in range(STEPS):
        builder.add_node(f"step_{i}", make_step(i))
        builder.add_edge(previous, f"step_{i}")
        previous = f"step_{i}"
    builder.add_edge(previous, END)
    return builder.compile(checkpointer=rt.checkpointer())


def run_thread(graph: Any, thread: str) -> dict[str, Any]:
    config: Any = {"configurable": {"thread_id": thread}}
    if graph.checkpointer.get_tuple(config) is not None:
        # Resume from the last checkpoint (a finished thread just returns its
        # state). Not get_state().next: a run killed right after its input
        # checkpoint has no next task there yet, only pending writes.
        return dict(graph.invoke(None, config))
    return dict(graph.invoke({"thread": thread, "results": []}, config))


def main(argv: list[str]) -> None:
    state_dir, log, out, *threads = argv
    with nl.Runtime(state_dir=state_dir) as rt:
        graph = build(rt, log)
        with ThreadPoolExecutor(len(threads)) as pool:
            finals = dict(zip(threads, pool.map(lambda t: run_thread(graph, t), threads)))
    tmp = f"{out}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(finals, fh, sort_keys=True)
    os.replace(tmp, out)


if __name__ == "__main__":
    main(sys.argv[1:])
