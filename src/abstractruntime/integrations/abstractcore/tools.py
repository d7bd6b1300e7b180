"""Tools: Python functions a workflow (or a model) calls through `TOOL_CALLS`, each with a policy.

- `allowed`: runs at once.
- `approval`: the run first waits (reason `user`) with a prompt naming the tool and its
  arguments and the choices approve / deny; a denial is recorded as a refused call the workflow
  sees (`{"success": false, "denied": true, ...}`).
- `external`: a host outside the daemon (the TypeScript client, a script) executes it: the run
  waits (reason `job`) with the calls in `waiting.details.effect`, like any external effect,
  until the host resumes it with `{"results": [...]}`.

How a `TOOL_CALLS` step with waits works: the handler never executes anything before every
approval is decided and every external result is in. Each wait resumes *the same node*, which
plans the same effect again; answers are kept in `vars["_tool_calls"]` under a key derived from
the calls, so the next pass finds them. Only the final pass executes the allowed and approved
calls, inside one recorded effect attempt: once its result is in the ledger, a crash and replay
reuse it and run no tool again.

This module does not import `abstractcore`; only a tool's JSON schema (`Tool.schema`) does.
"""

from __future__ import annotations

import hashlib
import json
import re
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional

from ...core.effects import EffectOutcome
from ...core.models import Effect, RunState, WaitReason, WaitState
from ._imports import import_abstractcore

ALLOWED = "allowed"
APPROVAL = "approval"
EXTERNAL = "external"
POLICIES = (ALLOWED, APPROVAL, EXTERNAL)

APPROVE, DENY = "approve", "deny"
STATE_VAR = "_tool_calls"  # run.vars key for approvals and external results


@dataclass
class Tool:
    name: str
    function: Optional[Callable[..., Any]]
    policy: str = ALLOWED
    description: Optional[str] = None
    parameters: Optional[Dict[str, Any]] = None
    # Found by the daemon's workflow loader at a module's top level, like a WorkflowSpec.
    _abstractruntime_tool: bool = field(default=True, repr=False)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"tool {self.name!r}: policy must be one of {', '.join(POLICIES)}, not {self.policy!r}")
        if self.function is None and self.policy != EXTERNAL:
            raise ValueError(f"tool {self.name!r}: only an external tool may have no function")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.function is None:
            raise TypeError(f"tool {self.name!r} is executed outside the process")
        return self.function(*args, **kwargs)

    def schema(self) -> Dict[str, Any]:
        """`{name, description, parameters}` for the model, from the function's signature."""
        if self.parameters is not None or self.function is None:
            return {
                "name": self.name,
                "description": self.description or "",
                "parameters": self.parameters or {"type": "object", "properties": {}},
            }
        d = import_abstractcore("abstractcore.tools").ToolDefinition.from_function(self.function)
        return {"name": self.name, "description": self.description or d.description, "parameters": d.parameters}


def tool(
    func: Optional[Callable[..., Any]] = None,
    *,
    name: Optional[str] = None,
    policy: str = ALLOWED,
    description: Optional[str] = None,
    parameters: Optional[Dict[str, Any]] = None,
) -> Any:
    """Make a function a tool: `@tool`, `@tool(policy="approval")`, or `tool(fn, name=...)`."""

    def wrap(fn: Callable[..., Any]) -> Tool:
        return Tool(
            name=name or fn.__name__,
            function=fn,
            policy=policy,
            description=description or (fn.__doc__ or "").strip().split("\n")[0] or None,
            parameters=parameters,
        )

    return wrap(func) if func is not None else wrap


def external_tool(name: str, *, description: str = "", parameters: Optional[Dict[str, Any]] = None) -> Tool:
    """A tool executed by a host outside the process: only its name and schema live here."""
    return Tool(name=name, function=None, policy=EXTERNAL, description=description, parameters=parameters)


class ToolRegistry:
    def __init__(self, tools: Iterable[Any] = ()) -> None:
        self._tools: Dict[str, Tool] = {}
        for t in tools:
            self.add(t)

    def add(self, t: Any, *, policy: Optional[str] = None) -> Tool:
        """Register a Tool or a plain function (policy `allowed` unless given)."""
        if not isinstance(t, Tool):
            if not callable(t):
                raise TypeError(f"expected a tool or a function, got {type(t).__name__}")
            t = tool(t, policy=policy or ALLOWED)
        elif policy is not None:
            t = Tool(t.name, t.function, policy, t.description, t.parameters)
        self._tools[t.name] = t
        return t

    def remove(self, name: str) -> None:
        self._tools.pop(name, None)

    def get(self, name: str) -> Optional[Tool]:
        return self._tools.get(name)

    def names(self) -> List[str]:
        return sorted(self._tools)

    def schemas(self, names: Optional[Iterable[str]] = None) -> List[Dict[str, Any]]:
        wanted = list(names) if names is not None else self.names()
        return [self._tools[n].schema() for n in wanted if n in self._tools]

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)


def _calls_key(calls: List[Dict[str, Any]]) -> str:
    body = json.dumps(calls, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def _call_id(call: Dict[str, Any], i: int) -> str:
    return str(call.get("call_id") or call.get("id") or f"call_{i}")


def _slot(call_id: str) -> str:
    # A call id as one segment of a dotted vars path (provider ids may hold dots).
    return re.sub(r"[^A-Za-z0-9_-]", "_", call_id)


class ToolCallsHandler:
    """The `TOOL_CALLS` effect handler over a `ToolRegistry` (see the module docstring)."""

    def __init__(self, registry: ToolRegistry) -> None:
        self.registry = registry

    def __call__(self, run: RunState, effect: Effect, default_next_node: Optional[str] = None) -> EffectOutcome:
        calls = effect.payload.get("tool_calls")
        if not isinstance(calls, list) or not all(isinstance(c, dict) and c.get("name") for c in calls):
            return EffectOutcome.failed(
                "TOOL_CALLS payload needs tool_calls: a list of {name, arguments, call_id}", retryable=False
            )
        allow = effect.payload.get("allowed_tools")
        key = _calls_key(calls)
        memory = run.vars.get(STATE_VAR, {}).get(key, {})
        approvals: Dict[str, Any] = memory.get("approvals", {})
        node = run.current_node

        # 1. Every approval decided, one prompt at a time, before anything runs.
        for i, call in enumerate(calls):
            t = self.registry.get(call["name"])
            cid = _call_id(call, i)
            if t is not None and t.policy == APPROVAL and _slot(cid) not in approvals:
                args = json.dumps(call.get("arguments") or {}, sort_keys=True, default=str)
                return EffectOutcome.waiting(
                    WaitState(
                        reason=WaitReason.USER,
                        wait_key=f"approval:{run.run_id}:{key}:{cid}",
                        resume_to_node=node,
                        result_key=f"{STATE_VAR}.{key}.approvals.{_slot(cid)}",
                        prompt=f"Allow the tool {call['name']} with arguments {args}?",
                        choices=[APPROVE, DENY],
                        allow_free_text=False,
                        details={"tool_call": {**call, "call_id": cid}, "kind": "tool_approval"},
                    )
                )

        # 2. Calls for a host outside the process: one wait for all of them.
        external = [
            {**c, "call_id": _call_id(c, i)}
            for i, c in enumerate(calls)
            if (t := self.registry.get(c["name"])) is not None and t.policy == EXTERNAL
        ]
        outside = memory.get("external")
        if external and outside is None:
            ext_effect = {"type": "tool_calls", "payload": {"tool_calls": external}, "result_key": None}
            return EffectOutcome.waiting(
                WaitState(
                    reason=WaitReason.JOB,
                    wait_key=f"job:{run.run_id}:{key}",
                    resume_to_node=node,
                    result_key=f"{STATE_VAR}.{key}.external",
                    details={"effect": ext_effect, "external": True, "node_id": node},
                )
            )
        outside_results = {
            str(r.get("call_id")): r for r in ((outside or {}).get("results") or []) if isinstance(r, dict)
        }

        # 3. Everything is decided: execute, in order.
        results = []
        for i, call in enumerate(calls):
            cid = _call_id(call, i)
            name = call["name"]
            base = {"call_id": cid, "name": name}
            t = self.registry.get(name)
            if allow is not None and name not in allow:
                results.append({**base, "success": False, "error": f"tool {name!r} is not in allowed_tools"})
            elif t is None:
                known = ", ".join(self.registry.names()) or "none"
                results.append({**base, "success": False, "error": f"unknown tool {name!r} (known: {known})"})
            elif t.policy == EXTERNAL:
                got = outside_results.get(cid)
                if got is None:
                    results.append({**base, "success": False, "error": "the host returned no result for this call"})
                else:
                    results.append({**base, "success": got.get("success", "error" not in got), **got})
            elif t.policy == APPROVAL and _answer(approvals.get(_slot(cid))) != APPROVE:
                results.append({**base, "success": False, "denied": True, "error": f"the user denied {name}"})
            else:
                results.append({**base, **_run_tool(t, call.get("arguments") or {})})
        return EffectOutcome.completed({"results": results})


def _answer(payload: Any) -> str:
    text = payload.get("text") if isinstance(payload, dict) else payload
    return str(text or "").strip().lower()


def _run_tool(t: Tool, arguments: Dict[str, Any]) -> Dict[str, Any]:
    if not isinstance(arguments, dict):
        return {"success": False, "error": f"arguments must be an object, got {type(arguments).__name__}"}
    try:
        out = t(**arguments)
    except (Exception, SystemExit) as e:  # isolation boundary: a failing tool is a failed call
        return {"success": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=5)}
    try:
        json.dumps(out)
    except (TypeError, ValueError):
        out = repr(out)  # the ledger keeps JSON only
    return {"success": True, "output": out}
