"""`abstractruntime init`: make a folder a project (a config, a workflows folder, an example)."""

from __future__ import annotations

import os
import sys

from .project import CONFIG_NAME, DATA_NAME, PYPROJECT, pyproject_table

CONFIG = f"""\
# abstractruntime project settings. Command-line flags and ABSTRACTRUNTIME_* environment
# variables override them; `abstractruntime config` shows what is in effect and why.

workflows = ["workflows"]    # folders of workflow modules, relative to this file
data = "{DATA_NAME}"     # runs, ledgers, the daemon's log and token
store = "files"              # files | sqlite | memory
# log_level = "info"         # debug | info | warning | error
# external = ["tool_calls"]  # effect types a host outside the daemon executes
# reload_grace = 1.0         # seconds a save that would remove workflows waits (in-place writes)
# event_log_mb = 32          # memory for the events subscribers replay from
# cache_mb = 32              # memory for the stores' recent-checkpoint cache
# max_subscriptions = 64     # per client connection

# A model for LLM_CALL (needs: pip install 'abstractruntime[abstractcore]'):
# [model]
# provider = "ollama"
# model = "qwen3:4b"
# base_url = "http://localhost:11434"
# api_key_env = "OPENAI_API_KEY"   # the NAME of the variable that holds the key, never the key
"""

EXAMPLE = '''\
"""A first workflow: ask a name, then greet.

Every .py file in this folder is a workflow module: each WorkflowSpec at its top level is served
by the daemon under its workflow_id, and reloaded when you save the file. Files whose name starts
with "_" are helpers that workflow modules may import (`from _helpers import ...`).

    abstractruntime serve                 # in the project folder (or any folder below it)
    abstractruntime start hello           # in a second terminal: the run waits for an answer
    abstractruntime answer --text Ada     # resumes it: {"greeting": "Hello, Ada!"}
"""

from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec


def ask(run, ctx):
    # A node *requests* effects: the run waits (durably, for days if need be) for the answer,
    # which lands in run.vars["name"] before the next node runs.
    return StepPlan(
        node_id="ask",
        effect=Effect(EffectType.ASK_USER, {"prompt": "What is your name?"}, result_key="name"),
        next_node="greet",
    )


def greet(run, ctx):
    return StepPlan(node_id="greet", complete_output={"greeting": f"Hello, {run.vars['name']['text']}!"})


hello = WorkflowSpec(workflow_id="hello", entry_node="ask", nodes={"ask": ask, "greet": greet})
'''


def init(folder: str) -> int:
    folder = os.path.abspath(folder)
    config = os.path.join(folder, CONFIG_NAME)
    pyproject = os.path.join(folder, PYPROJECT)
    if os.path.exists(config):
        print(f"abstractruntime: {config} already exists; nothing was changed", file=sys.stderr)
        return 1
    if os.path.isfile(pyproject) and pyproject_table(pyproject) is not None:
        print(
            f"abstractruntime: {pyproject} already has a [tool.abstractruntime] table; nothing was changed",
            file=sys.stderr,
        )
        return 1
    made = []
    with open(config, "x") as f:
        f.write(CONFIG)
    made.append(CONFIG_NAME)
    workflows = os.path.join(folder, "workflows")
    os.makedirs(workflows, exist_ok=True)
    example = os.path.join(workflows, "hello.py")
    if not os.path.exists(example):
        with open(example, "x") as f:
            f.write(EXAMPLE)
        made.append("workflows/hello.py")
    gitignore = os.path.join(folder, ".gitignore")
    line = f"{DATA_NAME}/"
    existing = ""
    if os.path.exists(gitignore):
        with open(gitignore) as f:
            existing = f.read()
    if line not in existing.splitlines():
        with open(gitignore, "a") as f:
            f.write(("" if not existing or existing.endswith("\n") else "\n") + line + "\n")
        made.append(f".gitignore ({line})")
    print(f"initialized an abstractruntime project in {folder}:")
    for m in made:
        print(f"  {m}")
    print("next: `abstractruntime serve` here, then `abstractruntime start hello` in a second terminal")
    return 0
