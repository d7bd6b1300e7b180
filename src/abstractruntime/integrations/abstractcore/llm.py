"""The `LLM_CALL` effect handler, over an AbstractCore provider.

Payload: `{prompt | messages, system_prompt?, tools?, response_schema?, params?}`; `tools` is a
list of tool names (looked up in the tool registry) or of `{name, description, parameters}`
schemas; `params` are generation parameters (`temperature`, `max_tokens`, ...). The result is
JSON only: `{content, tool_calls: [{name, arguments, call_id}], usage, model, finish_reason,
provider}` (plus `data`, the parsed JSON answer, with `response_schema`). Provider objects and
raw responses never enter run state.

Failures: transient ones (a timeout, a 5xx or 429, a refused or reset connection, an empty
completion) raise, so the kernel's retry policy tries again and records every attempt; others
(a malformed body, a 4xx, an unknown model) fail the step at once. Either way the message names
the provider, the model and the cause. Credentials are provider options given when the handler
is built: they are never read from payloads and are masked in every message.

AbstractCore's own retries are turned off (`RetryConfig(max_attempts=1)`): retrying is the
kernel's job, so each attempt is a ledger record.
"""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from ...core.effects import EffectOutcome
from ...core.models import Effect, RunState
from ._imports import import_abstractcore
from .tools import ToolRegistry

ProgressSink = Callable[[str, str, str], None]  # (run_id, node_id, text delta)

# Names of options that hold credentials (max_tokens is not one of them).
SECRET_PARAM = re.compile(
    r"^(.*api[_-]?key|.*secret|password|authorization|((access|auth|bearer|api)[_-]?)?token)$", re.I
)
# AbstractCore reports every provider failure as a ProviderAPIError with the cause in its text
# (the httpx exception is not chained), so the text is what there is to classify.
STATUS_RETRY = re.compile(r"\b(5\d\d|429)\b")
NOT_TRANSIENT = re.compile(r"expecting value|json|\b4\d\d\b|not found|unauthori[sz]ed|forbidden", re.I)
TRANSIENT = re.compile(
    r"timed? ?out|timeout|connection (refused|reset|aborted|error)|errno 11[01]|errno 104|rate limit|"
    r"temporarily|unavailable|empty completion|remote ?protocol|server disconnected",
    re.I,
)


def is_transient(text: str) -> bool:
    """A timeout, a 5xx or 429, a refused or reset connection, an empty completion."""
    if STATUS_RETRY.search(text):
        return True
    return not NOT_TRANSIENT.search(text) and bool(TRANSIENT.search(text))


class TransientLLMError(RuntimeError):
    """A provider failure worth another attempt; the kernel's retry policy decides."""


class LLMCallHandler:
    def __init__(
        self,
        provider: str,
        model: str,
        *,
        tools: Optional[ToolRegistry] = None,
        provider_options: Optional[Dict[str, Any]] = None,
        on_progress: Optional[ProgressSink] = None,
        progress_interval_s: float = 0.05,
    ) -> None:
        self.provider = provider
        self.model = model
        self.tools = tools
        self.on_progress = on_progress
        self.progress_interval_s = progress_interval_s
        self._options = dict(provider_options or {})
        # Values to mask wherever a message could carry them.
        self._secrets = [
            str(v) for k, v in self._options.items() if SECRET_PARAM.search(k) and isinstance(v, str) and len(v) >= 4
        ]
        self._llm: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never the options: they hold credentials
        return f"LLMCallHandler(provider={self.provider!r}, model={self.model!r})"

    # -- the provider -----------------------------------------------------------------------------

    def _client(self) -> Any:
        with self._lock:
            if self._llm is None:
                retry = import_abstractcore("abstractcore.core.retry")
                opts = {"retry_config": retry.RetryConfig(max_attempts=1), **self._options}
                self._llm = import_abstractcore().create_llm(self.provider, model=self.model, **opts)
            return self._llm

    def close(self) -> None:
        """Close the provider's HTTP connections (the handler stays usable: the next call
        connects again)."""
        with self._lock:
            llm, self._llm = self._llm, None
        if llm is not None and hasattr(llm, "unload_model"):
            llm.unload_model(self.model)

    def mask(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "***")
        return text

    def _describe(self, e: BaseException) -> str:
        cause = str(e).strip() or type(e).__name__
        return self.mask(f"{self.provider} model {self.model}: {cause}")

    # -- the handler ------------------------------------------------------------------------------

    def __call__(self, run: RunState, effect: Effect, default_next_node: Optional[str] = None) -> EffectOutcome:
        p = effect.payload
        prompt, messages = p.get("prompt"), p.get("messages")
        if not prompt and not messages:
            return EffectOutcome.failed("LLM_CALL payload needs prompt or messages", retryable=False)
        params = dict(p.get("params") or {})
        secret = [k for k in params if SECRET_PARAM.search(k)]
        if secret:
            # It would already sit in the ledger with the effect: refuse, and say where keys go.
            return EffectOutcome.failed(
                f"LLM_CALL params must not carry credentials ({', '.join(secret)}): give them as provider "
                "options (create_local_runtime(..., api_key=...) or serve --llm-api-key-env)",
                retryable=False,
            )
        kwargs: Dict[str, Any] = dict(params)
        if messages:
            kwargs["messages"] = messages
        if p.get("system_prompt"):
            kwargs["system_prompt"] = p["system_prompt"]
        try:
            tools = self._tool_schemas(p.get("tools"))
        except ValueError as e:
            return EffectOutcome.failed(str(e), retryable=False)
        if tools:
            kwargs["tools"] = tools
        schema = p.get("response_schema")
        if schema is not None:
            rule = "Answer with JSON only, matching this JSON schema: " + json.dumps(schema)
            kwargs["system_prompt"] = f"{kwargs['system_prompt']}\n\n{rule}" if kwargs.get("system_prompt") else rule
        try:
            llm = self._client()
            if self.on_progress is not None:
                result = self._stream(llm, run, prompt or "", kwargs)
            else:
                result = self._normalize(llm.generate(prompt or "", **kwargs))
        except Exception as e:  # provider failures: classified, described, masked
            message = self._describe(e)
            if is_transient(str(e)):
                raise TransientLLMError(message) from None
            return EffectOutcome.failed(message, retryable=False)
        if schema is not None:
            try:
                result["data"] = _parse_json(result.get("content") or "")
            except ValueError as e:
                return EffectOutcome.failed(
                    f"{self.provider} model {self.model}: the answer is not JSON ({e})", retryable=False
                )
        return EffectOutcome.completed(result)

    def _tool_schemas(self, tools: Any) -> List[Dict[str, Any]]:
        if not tools:
            return []
        out = []
        for t in tools:
            if isinstance(t, str):
                if self.tools is None or t not in self.tools:
                    known = ", ".join(self.tools.names()) if self.tools else "none"
                    raise ValueError(f"LLM_CALL names tool {t!r}, which is not registered (registered: {known})")
                out.extend(self.tools.schemas([t]))
            elif isinstance(t, dict):
                out.append(t)
        return out

    def _stream(self, llm: Any, run: RunState, prompt: str, kwargs: Dict[str, Any]) -> Dict[str, Any]:
        assert self.on_progress is not None
        node = run.current_node
        parts: List[str] = []
        pending: List[str] = []
        last = time.monotonic()
        final: Dict[str, Any] = {"usage": None, "model": None, "finish_reason": None}
        whole: List[Dict[str, Any]] = []  # tool calls a provider sends complete (Ollama)
        pieces: Dict[int, Dict[str, Any]] = {}  # OpenAI-style deltas, joined by their index
        for chunk in llm.generate(prompt, stream=True, **kwargs):
            if chunk.content:
                parts.append(chunk.content)
                pending.append(chunk.content)
            for i, tc in enumerate(chunk.tool_calls or []):
                fn = tc.get("function") if isinstance(tc, dict) else None
                if not isinstance(fn, dict):
                    whole.append(tc)
                    continue
                slot = pieces.setdefault(int(tc.get("index", i)), {"name": "", "arguments": "", "call_id": None})
                slot["name"] = slot["name"] or fn.get("name") or ""
                args = fn.get("arguments")
                slot["arguments"] += args if isinstance(args, str) else json.dumps(args or {})
                slot["call_id"] = slot["call_id"] or tc.get("id")
            for k in final:
                v = getattr(chunk, k, None)
                if v:
                    final[k] = v
            if pending and time.monotonic() - last >= self.progress_interval_s:
                self.on_progress(run.run_id, node, "".join(pending))
                pending.clear()
                last = time.monotonic()
        final["tool_calls"] = whole + [pieces[i] for i in sorted(pieces)]
        if pending:
            self.on_progress(run.run_id, node, "".join(pending))
        return self._normalize_parts("".join(parts), final)

    def _normalize(self, resp: Any) -> Dict[str, Any]:
        return self._normalize_parts(
            resp.content or "",
            {
                "tool_calls": resp.tool_calls,
                "usage": resp.usage,
                "model": resp.model,
                "finish_reason": resp.finish_reason,
            },
        )

    def _normalize_parts(self, content: str, r: Dict[str, Any]) -> Dict[str, Any]:
        calls = []
        for i, c in enumerate(r.get("tool_calls") or []):
            c = c if isinstance(c, dict) else getattr(c, "__dict__", {})
            if isinstance(c.get("function"), dict):  # the OpenAI shape
                c = {
                    "name": c["function"].get("name"),
                    "arguments": c["function"].get("arguments"),
                    "call_id": c.get("id"),
                }
            args = c.get("arguments")
            if isinstance(args, str):
                try:
                    args = json.loads(args)
                except ValueError:
                    args = {"_raw": args}
            calls.append(
                {
                    "name": str(c.get("name")),
                    "arguments": _json_safe(args or {}),
                    "call_id": str(c.get("call_id") or f"call_{i}"),
                }
            )
        usage = {
            k: v for k, v in (r.get("usage") or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        return {
            "content": content,
            "tool_calls": calls,
            "usage": usage,
            "model": str(r.get("model") or self.model),
            "finish_reason": r.get("finish_reason") or ("tool_calls" if calls else "stop"),
            "provider": self.provider,
        }


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _parse_json(text: str) -> Any:
    t = text.strip()
    fenced = re.match(r"^```(?:json)?\s*(.*?)\s*```$", t, re.S)
    if fenced:
        t = fenced.group(1)
    return json.loads(t)


def not_configured(run: RunState, effect: Effect) -> EffectOutcome:
    """The LLM_CALL handler of a daemon started without a model."""
    return EffectOutcome.failed(
        "no LLM is configured: set provider and model in the [model] table of abstractruntime.toml, or start the "
        "daemon with --llm-provider and --llm-model (needs pip install 'abstractruntime[abstractcore]'; see "
        "docs/integrations/abstractcore.md)",
        retryable=False,
    )
