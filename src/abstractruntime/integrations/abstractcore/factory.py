"""`create_local_runtime`: a Runtime whose `LLM_CALL` and `TOOL_CALLS` effects run through
AbstractCore and a tool registry, in this process."""

from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Optional, Union

from ...core.models import EffectType
from ...core.policy import RetryPolicy
from ...core.runtime import Runtime
from ...storage import InMemoryLedgerStore, InMemoryRunStore
from .llm import LLMCallHandler, ProgressSink
from .tools import Tool, ToolCallsHandler, ToolRegistry, tool

# Provider calls retry by default (each attempt a ledger record), 0.5 s then 1 s apart; tool
# calls do not: a tool may not be safe to run twice.
DEFAULT_EFFECT_POLICY = RetryPolicy(llm_max_attempts=3, tool_max_attempts=1, backoff_base=0.5, backoff_max=8.0)

ToolsArg = Union[ToolRegistry, Mapping[str, Any], Iterable[Any], None]


def as_registry(tools: ToolsArg) -> ToolRegistry:
    if isinstance(tools, ToolRegistry):
        return tools
    reg = ToolRegistry()
    if isinstance(tools, Mapping):
        for name, fn in tools.items():
            reg.add(fn if isinstance(fn, Tool) or not callable(fn) else tool(fn, name=name))
    elif tools is not None:
        for t in tools:
            reg.add(t)
    return reg


def build_effect_handlers(
    *,
    provider: str,
    model: str,
    tools: ToolsArg = None,
    provider_options: Optional[Dict[str, Any]] = None,
    on_progress: Optional[ProgressSink] = None,
) -> Dict[EffectType, Any]:
    """The two handlers, for hosts that build their own Runtime."""
    registry = as_registry(tools)
    return {
        EffectType.LLM_CALL: LLMCallHandler(
            provider, model, tools=registry, provider_options=provider_options, on_progress=on_progress
        ),
        EffectType.TOOL_CALLS: ToolCallsHandler(registry),
    }


def create_local_runtime(
    *,
    provider: str,
    model: str,
    llm_kwargs: Optional[Dict[str, Any]] = None,
    run_store: Any = None,
    ledger_store: Any = None,
    tool_executor: ToolsArg = None,
    tools: ToolsArg = None,
    effect_policy: Any = None,
    workflow_registry: Any = None,
    on_progress: Optional[ProgressSink] = None,
    **provider_options: Any,
) -> Runtime:
    """A Runtime with `LLM_CALL` (provider/model through AbstractCore) and `TOOL_CALLS` (the
    given tools: a ToolRegistry, `{name: function}`, or a list of functions and `@tool`s).

    Provider options (`base_url=`, `api_key=`, `timeout=`, ...) go to AbstractCore's
    `create_llm`; `llm_kwargs` is the same as a dict. Stores default to in-memory.
    """
    options = {**(llm_kwargs or {}), **provider_options}
    handlers = build_effect_handlers(
        provider=provider,
        model=model,
        tools=tools if tools is not None else tool_executor,
        provider_options=options,
        on_progress=on_progress,
    )
    return Runtime(
        run_store=run_store or InMemoryRunStore(),
        ledger_store=ledger_store or InMemoryLedgerStore(),
        effect_handlers=handlers,
        effect_policy=effect_policy or DEFAULT_EFFECT_POLICY,
        workflow_registry=workflow_registry,
    )
