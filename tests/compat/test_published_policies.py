"""Retry policies and idempotency keys with the published shape and behaviour."""

from __future__ import annotations

import re

from abstractruntime import (
    DefaultEffectPolicy,
    Effect,
    EffectType,
    InMemoryLedgerStore,
    InMemoryRunStore,
    NoRetryPolicy,
    RetryPolicy,
    RunStatus,
    Runtime,
    StepPlan,
    WorkflowSpec,
    compute_idempotency_key,
    create_scheduled_runtime,
)
from abstractruntime.core.runtime import EffectOutcome

LLM = Effect(EffectType.LLM_CALL, {"prompt": "hi"})
TOOLS = Effect(EffectType.TOOL_CALLS, {"tool_calls": []})


def test_retry_policy_gives_llm_and_tool_attempts_and_doubles_its_backoff_up_to_a_cap():
    p = RetryPolicy(llm_max_attempts=4, tool_max_attempts=2, backoff_base=0.25)
    assert (p.max_attempts(LLM), p.max_attempts(TOOLS)) == (4, 2)
    assert p.max_attempts(Effect(EffectType.ANSWER_USER, {})) == 1
    assert [p.backoff_seconds(effect=LLM, attempt=n) for n in (1, 2, 3)] == [0.25, 0.5, 1.0]
    capped = RetryPolicy(backoff_base=2.0, backoff_max=5.0)
    assert [capped.backoff_seconds(effect=LLM, attempt=n) for n in (1, 2, 3, 4)] == [2.0, 4.0, 5.0, 5.0]


def test_default_effect_policy_has_a_default_and_per_effect_attempts():
    p = DefaultEffectPolicy(
        default_max_attempts=3, default_backoff_base=0.5, default_backoff_max=3.0, effect_max_attempts={"llm_call": 5}
    )
    assert (p.max_attempts(LLM), p.max_attempts(TOOLS)) == (5, 3)
    assert [p.backoff_seconds(effect=LLM, attempt=n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert DefaultEffectPolicy().max_attempts(LLM) == 1
    assert DefaultEffectPolicy(effect_max_attempts={EffectType.LLM_CALL: 4}).max_attempts(LLM) == 4
    assert NoRetryPolicy().max_attempts(LLM) == 1


def test_compute_idempotency_key_is_32_hex_characters_and_names_the_effect():
    k = compute_idempotency_key(run_id="r1", node_id="n", effect=LLM)
    assert re.fullmatch(r"[0-9a-f]{32}", k)
    assert k == compute_idempotency_key(run_id="r1", node_id="n", effect=LLM)
    assert k != compute_idempotency_key(run_id="r1", node_id="n", effect=Effect(EffectType.LLM_CALL, {"prompt": "ho"}))
    assert k != compute_idempotency_key(run_id="r2", node_id="n", effect=LLM)


def calls_llm():
    return WorkflowSpec(
        workflow_id="llm",
        entry_node="a",
        nodes={
            "a": lambda run, ctx: StepPlan(
                node_id="a", effect=Effect(EffectType.LLM_CALL, {"p": 1}, "r"), next_node="b"
            ),
            "b": lambda run, ctx: StepPlan(node_id="b", complete_output={"r": run.vars["r"]}),
        },
    )


def test_every_attempt_is_a_ledger_record_with_its_idempotency_key_and_attempt(published):
    calls = []

    def flaky(run, effect):
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("provider down")
        return EffectOutcome.completed({"ok": len(calls)})

    runs, ledger = published.open()
    rt = Runtime(
        run_store=runs,
        ledger_store=ledger,
        effect_handlers={EffectType.LLM_CALL: flaky},
        effect_policy=RetryPolicy(llm_max_attempts=3, backoff_base=0.0),
    )
    w = calls_llm()
    rid = rt.start(workflow=w)
    assert rt.tick(workflow=w, run_id=rid).output == {"r": {"ok": 3}}
    attempts = [r for r in rt.get_ledger(rid) if r["node_id"] == "a"]
    assert [(r["status"], r["attempt"]) for r in attempts] == [
        ("started", 1), ("failed", 1), ("started", 2), ("failed", 2), ("started", 3), ("completed", 3),
    ]  # fmt: skip
    keys = {r["idempotency_key"] for r in attempts}
    assert len(keys) == 1 and re.fullmatch(r"[0-9a-f]{32}", keys.pop())


def test_a_failed_outcome_is_retried_unless_it_says_it_is_not_retryable():
    def failing(calls, retryable):
        def handler(run, effect):
            calls.append(1)
            return EffectOutcome.failed("no", retryable=retryable)

        return handler

    for retryable, tries in ((True, 3), (False, 1)):
        calls: list = []
        rt = Runtime(
            run_store=InMemoryRunStore(),
            ledger_store=InMemoryLedgerStore(),
            effect_handlers={EffectType.LLM_CALL: failing(calls, retryable)},
            effect_policy=RetryPolicy(llm_max_attempts=3, backoff_base=0.0),
        )
        w = calls_llm()
        st = rt.tick(workflow=w, run_id=rt.start(workflow=w))
        assert st.status == RunStatus.FAILED and len(calls) == tries


def test_a_wait_effect_is_never_retried():
    calls = []

    def broken_wait(run, effect):
        calls.append(1)
        raise RuntimeError("no wait today")

    rt = Runtime(
        run_store=InMemoryRunStore(),
        ledger_store=InMemoryLedgerStore(),
        effect_handlers={EffectType.WAIT_EVENT: broken_wait},
        effect_policy=DefaultEffectPolicy(default_max_attempts=5, default_backoff_base=0.0),
    )
    w = WorkflowSpec(
        workflow_id="w",
        entry_node="a",
        nodes={
            "a": lambda run, ctx: StepPlan(
                node_id="a", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "k"}), next_node="a"
            )
        },
    )
    assert rt.tick(workflow=w, run_id=rt.start(workflow=w)).status == RunStatus.FAILED
    assert len(calls) == 1


def test_create_scheduled_runtime_takes_an_effect_policy():
    policy = RetryPolicy(llm_max_attempts=2)
    sr = create_scheduled_runtime(effect_policy=policy, auto_start=False)
    assert sr.runtime.effect_policy is policy
