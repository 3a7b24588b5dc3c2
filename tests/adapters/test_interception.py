"""The intercepted LangChain paths: pinned to the tested sources, installed once, inert without a switch."""

from __future__ import annotations

import inspect
from typing import Any

import langchain_core
import pytest
from langchain_core.callbacks.manager import ahandle_event, handle_event
from langchain_core.language_models import BaseChatModel
from langchain_core.tools import BaseTool

from nalar_plugin import Runtime, adapters
from nalar_plugin.adapters import interception
from nalar_plugin.adapters.remote import original
from nalar_plugin.errors import RuntimeStateError

from ._apps import add


@pytest.mark.parametrize(("owner", "name"), sorted(interception.GUARDED, key=lambda k: (k[0].__name__, k[1])),
                         ids=lambda v: getattr(v, "__name__", v))
def test_wrapped_paths_are_the_tested_ones(owner: type, name: str) -> None:
    digest = interception.source_digest(owner, name)
    assert digest in interception.GUARDED[(owner, name)], (
        f"langchain-core {langchain_core.__version__} changed {owner.__name__}.{name} (digest {digest}); "
        "nalar's seam wraps it: re-check nalar_plugin/adapters/interception.py against the new source, "
        "then add the digest to GUARDED"
    )


def test_the_private_names_the_adapters_use_still_exist() -> None:
    from langchain_core.tracers import _streaming
    from langgraph._internal import _constants

    assert _streaming._V2StreamingCallbackHandler and _streaming._StreamingCallbackHandler
    assert _constants.CONFIG_KEY_RUNTIME == "__pregel_runtime"
    assert _constants.CONFIG_KEY_SCRATCHPAD == "__pregel_scratchpad"
    run = list(inspect.signature(original(BaseTool, "run")).parameters)
    assert run[:6] == ["self", "tool_input", "verbose", "start_color", "color", "callbacks"]
    assert "tool_call_id" in run
    assert list(inspect.signature(BaseChatModel._should_stream).parameters) == ["self", "async_api", "run_manager", "kwargs"]
    assert callable(BaseChatModel._convert_input)
    gen = list(inspect.signature(original(BaseChatModel, "_generate_with_cache")).parameters)
    assert gen == ["self", "messages", "stop", "run_manager", "kwargs"]
    assert list(inspect.signature(handle_event).parameters)[:3] == ["handlers", "event_name", "ignore_condition_name"]
    assert list(inspect.signature(ahandle_event).parameters)[:3] == ["handlers", "event_name", "ignore_condition_name"]


def test_paths_are_intercepted_while_a_runtime_uses_the_adapters(tmp_path: Any) -> None:
    users = interception.users()  # other tests' Runtimes may use them too
    with Runtime(state_dir=str(tmp_path / "a")) as one:
        one.callback()
        one.callback()  # one plugin per Runtime, however many handlers
        assert interception.installed() and interception.users() == users + 1
        with Runtime(state_dir=str(tmp_path / "b")) as two:
            two.middleware()
            assert interception.users() == users + 2
        assert interception.installed() and interception.users() == users + 1
        # Without a switch the wrapped path is the original one.
        message = add.invoke({"args": {"a": 1, "b": 2}, "id": "x", "name": "add", "type": "tool_call"})
        assert message.content == "3" and message.artifact["worker"] is None
    assert interception.users() == users and interception.installed() == bool(users)
    if not users:
        assert "__nalar_original__" not in vars(BaseTool.run)
    with pytest.raises(RuntimeStateError, match="closed"):
        one.callback()


def test_adapters_all_is_sorted_and_complete() -> None:
    assert adapters.__all__ == sorted(adapters.__all__)
    assert {"AdapterService", "InProcessWarning", "NalarCallbackHandler", "NalarMiddleware", "NotSendable"} <= set(
        adapters.__all__)
    assert all(hasattr(adapters, name) for name in adapters.__all__)
