"""LLM calls and tools through AbstractCore (`pip install abstractruntime[abstractcore]`).

Importing `create_local_runtime` or `LLMCallHandler` is the opt-in to AbstractCore; the tool
pieces (`tool`, `ToolRegistry`, `ToolCallsHandler`) need nothing beyond the kernel, so workflow
modules can declare tools whether or not a model is configured.
"""

from .factory import DEFAULT_EFFECT_POLICY, build_effect_handlers, create_local_runtime
from .llm import LLMCallHandler, TransientLLMError
from .tools import (
    ALLOWED,
    APPROVAL,
    EXTERNAL,
    Tool,
    ToolCallsHandler,
    ToolRegistry,
    external_tool,
    tool,
)

__all__ = [
    "ALLOWED",
    "APPROVAL",
    "DEFAULT_EFFECT_POLICY",
    "EXTERNAL",
    "LLMCallHandler",
    "Tool",
    "ToolCallsHandler",
    "ToolRegistry",
    "TransientLLMError",
    "build_effect_handlers",
    "create_local_runtime",
    "external_tool",
    "tool",
]
