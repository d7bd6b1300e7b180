"""The workflow catalog (loading and reloading modules) and the kernel's side of a code change:
versions on records, stranded runs, migrate."""

from __future__ import annotations

import sys

import pytest

from abstractruntime import (
    Effect,
    EffectType,
    InMemoryLedgerStore,
    InMemoryRunStore,
    Runtime,
    StepPlan,
    WorkflowSpec,
)
from abstractruntime.core.errors import InvalidWorkflowError, RunNotWaitingError, RunStrandedError
from abstractruntime.daemon.loader import WorkflowCatalog
from abstractruntime.scheduler import WorkflowRegistry

MODULE = """
from abstractruntime import StepPlan, WorkflowSpec

COUNTER = []
COUNTER.append(1)

def go(run, ctx):
    return StepPlan(node_id="go", complete_output={{"tag": {tag!r}, "loads": len(COUNTER)}})

{name} = WorkflowSpec(workflow_id={wid!r}, entry_node="go", nodes={{"go": go}})
"""


def write(path, tag="a", wid="w", name="spec"):
    path.write_text(MODULE.format(tag=tag, wid=wid, name=name))


def run_once(registry, wid="w"):
    rt = Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore(), workflow_registry=registry)
    return rt.start_and_tick(workflow=registry.get_or_raise(wid)).output


def test_each_load_is_a_fresh_module_that_never_stays_in_sys_modules(tmp_path):
    write(tmp_path / "flow.py", "a")
    reg = WorkflowRegistry()
    cat = WorkflowCatalog([str(tmp_path)], reg)
    before = set(sys.modules)
    r = cat.rescan()
    assert [(c.workflow_id, c.old_version) for c in r.changes] == [("w", None)]
    assert run_once(reg) == {"tag": "a", "loads": 1}
    write(tmp_path / "flow.py", "b")
    r = cat.rescan()
    assert r.changes[0].old_version != r.changes[0].new_version
    # Module state starts over: importlib.reload would have found COUNTER == [1] already.
    assert run_once(reg) == {"tag": "b", "loads": 1}
    assert not [m for m in set(sys.modules) - before if "abstractruntime_workflows" in m]
    assert not cat.rescan().anything  # nothing changed, nothing re-imported


def test_skipped_files_and_a_spec_defined_twice_in_one_file(tmp_path):
    write(tmp_path / "_helpers.py", wid="hidden")
    write(tmp_path / ".#flow.py", wid="lockfile")
    (tmp_path / "twice.py").write_text(
        MODULE.format(tag="a", wid="w", name="one") + MODULE.format(tag="b", wid="w", name="two")
    )
    reg = WorkflowRegistry()
    r = WorkflowCatalog([str(tmp_path)], reg).rescan()
    assert reg.list_ids() == []
    assert [e["message"] for e in r.new_errors] == [
        f"ValueError: workflow 'w' is defined twice in {tmp_path / 'twice.py'}"
    ]


def test_a_module_that_exits_at_import_is_a_load_error(tmp_path):
    (tmp_path / "quits.py").write_text("import sys\nsys.exit(3)\n")
    r = WorkflowCatalog([str(tmp_path)], WorkflowRegistry()).rescan()
    assert [(e["line"], e["message"]) for e in r.new_errors] == [(2, "SystemExit: 3")]


def test_a_missing_folder_is_reported_not_fatal(tmp_path):
    cat = WorkflowCatalog([str(tmp_path / "nope")], WorkflowRegistry())
    cat.rescan()
    assert cat.errors() == [{"file": str(tmp_path / "nope"), "line": None, "message": "workflow folder does not exist"}]


def _ask(next_node):
    def ask(run, ctx):
        return StepPlan(
            node_id="ask", effect=Effect(EffectType.ASK_USER, {"prompt": "?"}, result_key="a"), next_node=next_node
        )

    return ask


def _end(tag):
    return lambda run, ctx: StepPlan(node_id="end", complete_output={"tag": tag})


def test_records_carry_the_version_their_step_ran_under_and_migrate_moves_a_stranded_run():
    v1 = WorkflowSpec(workflow_id="w", entry_node="ask", nodes={"ask": _ask("end"), "end": _end("v1")})
    v1.version = "v1"
    reg = WorkflowRegistry([v1])
    rt = Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore(), workflow_registry=reg)
    run = rt.start_and_tick(workflow=v1)
    v2 = WorkflowSpec(workflow_id="w", entry_node="ask", nodes={"ask": _ask("fin"), "fin": _end("v2")})
    v2.version = "v2"
    reg.register(v2, replace=True)  # a new version of the same id, as hot reload swaps it in

    with pytest.raises(RunStrandedError) as e:
        rt.resume(workflow=None, run_id=run.run_id, wait_key=None, payload={"text": "x"})
    assert e.value.data == {
        "run_id": run.run_id,
        "workflow_id": "w",
        "node_id": "end",
        "workflow_version": "v2",
        "run_version": "v1",
    }
    assert isinstance(e.value, InvalidWorkflowError) and e.value.CODE == 1012
    assert rt.emit_event(wait_key=run.waiting.wait_key, payload={}) == []  # skipped, not raised
    assert rt.get_state(run.run_id).status.value == "waiting"

    with pytest.raises(InvalidWorkflowError):
        rt.migrate_run(run.run_id, to_node="gone")
    moved = rt.migrate_run(run.run_id)  # `end` is gone: back to the entry node
    assert moved.waiting.resume_to_node == "ask" and moved.workflow_version == "v1" and moved.last_version == "v2"
    done = rt.migrate_run(run.run_id, to_node="fin")
    assert done.waiting.resume_to_node == "fin"
    final = rt.resume(workflow=None, run_id=run.run_id, wait_key=None, payload={"text": "x"})
    assert final.output == {"tag": "v2"}
    assert [r["workflow_version"] for r in rt.get_ledger(run.run_id)] == ["v1", "v2", "v2", "v2", "v2"]
    with pytest.raises(RunNotWaitingError):
        rt.migrate_run(run.run_id)
    assert rt.verify_ledger(run.run_id)["ok"]


def test_a_tool_defined_in_two_files_loads_from_the_second_once_the_first_lets_go(tmp_path):
    from abstractruntime.integrations.abstractcore import ToolRegistry

    tool_src = (
        "from abstractruntime.integrations.abstractcore import tool\n\n@tool\ndef ping() -> str:\n    return {tag!r}\n"
    )
    (tmp_path / "a.py").write_text(tool_src.format(tag="a"))
    (tmp_path / "b.py").write_text(tool_src.format(tag="b"))
    tools = ToolRegistry()
    cat = WorkflowCatalog([str(tmp_path)], WorkflowRegistry(), tools)
    r = cat.rescan()
    assert [e["message"] for e in r.new_errors] == [
        f"tool 'ping' is defined in both {tmp_path / 'a.py'} and {tmp_path / 'b.py'}"
    ]
    assert tools.get("ping")() == "a"
    (tmp_path / "a.py").unlink()
    r = cat.rescan()
    assert tools.get("ping")() == "b" and cat.errors() == []  # b.py, unchanged, takes it over


# -- helper modules ---------------------------------------------------------------------------------

USES_HELPER = """
from _policy import limit

def go(run, ctx):
    return StepPlan(node_id="go", complete_output={{"limit": limit()}})

from abstractruntime import StepPlan, WorkflowSpec
{name} = WorkflowSpec(workflow_id={wid!r}, entry_node="go", nodes={{"go": go}})
"""


def helper(folder, value, extra=""):
    (folder / "_policy.py").write_text(f"{extra}def limit():\n    return {value!r}\n")


def test_a_workflow_module_imports_a_helper_of_its_folder(tmp_path):
    helper(tmp_path, 100)
    (tmp_path / "flow.py").write_text(USES_HELPER.format(name="spec", wid="w"))
    reg = WorkflowRegistry()
    cat = WorkflowCatalog([str(tmp_path)], reg)
    r = cat.rescan()
    assert not r.new_errors, r.new_errors
    assert run_once(reg) == {"limit": 100}
    # The helper is private to the load: it never lands in sys.modules under its own name.
    assert "_policy" not in sys.modules


def test_editing_a_helper_reloads_every_module_that_imports_it_as_a_new_version(tmp_path):
    helper(tmp_path, 100)
    (tmp_path / "a.py").write_text(USES_HELPER.format(name="a", wid="a"))
    (tmp_path / "b.py").write_text(USES_HELPER.format(name="b", wid="b"))
    write(tmp_path / "c.py", "c", wid="c")  # imports no helper: stays as it is
    reg = WorkflowRegistry()
    cat = WorkflowCatalog([str(tmp_path)], reg)
    cat.rescan()
    before = {w: reg.get(w).version for w in "abc"}
    helper(tmp_path, 250)
    r = cat.rescan()
    assert sorted(c.workflow_id for c in r.changes) == ["a", "b"]
    assert all(c.old_version == before[c.workflow_id] != c.new_version for c in r.changes)
    assert run_once(reg, "a") == {"limit": 250} and run_once(reg, "b") == {"limit": 250}
    assert reg.get("c").version == before["c"]
    assert not cat.rescan().anything


def test_a_broken_helper_is_a_load_error_of_each_dependent_at_the_helpers_line(tmp_path):
    helper(tmp_path, 100)
    (tmp_path / "a.py").write_text(USES_HELPER.format(name="a", wid="a"))
    (tmp_path / "b.py").write_text(USES_HELPER.format(name="b", wid="b"))
    reg = WorkflowRegistry()
    cat = WorkflowCatalog([str(tmp_path)], reg)
    cat.rescan()
    good = reg.get("a").version
    helper(tmp_path, 100, extra="x = 1\nraise RuntimeError('no policy today')\n")
    r = cat.rescan()
    assert sorted(e["module"] for e in r.new_errors) == [str(tmp_path / "a.py"), str(tmp_path / "b.py")]
    for e in r.new_errors:
        assert e["file"] == str(tmp_path / "_policy.py") and e["line"] == 2
        assert e["message"].startswith("RuntimeError: no policy today (in _policy.py, imported by ")
    assert reg.get("a").version == good and run_once(reg, "a") == {"limit": 100}  # the old version serves on
    (tmp_path / "_policy.py").write_text("def limit(:\n")  # a syntax error: its own line
    r = cat.rescan()
    assert {(e["file"], e["line"]) for e in r.new_errors} == {(str(tmp_path / "_policy.py"), 1)}
    helper(tmp_path, 7)
    r = cat.rescan()
    assert sorted(r.cleared) == [str(tmp_path / "a.py"), str(tmp_path / "b.py")]
    assert run_once(reg, "b") == {"limit": 7} and not cat.errors()


def test_a_helper_that_appears_later_lets_its_dependent_load(tmp_path):
    (tmp_path / "flow.py").write_text(USES_HELPER.format(name="spec", wid="w"))
    reg = WorkflowRegistry()
    cat = WorkflowCatalog([str(tmp_path)], reg)
    r = cat.rescan()
    assert "No module named '_policy'" in r.new_errors[0]["message"]
    helper(tmp_path, 3)
    r = cat.rescan()
    assert r.cleared == [str(tmp_path / "flow.py")] and run_once(reg) == {"limit": 3}


def test_two_folders_with_a_helper_of_the_same_name_do_not_see_each_others(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    helper(one, 1)
    helper(two, 2)
    (one / "flow.py").write_text(USES_HELPER.format(name="spec", wid="one"))
    (two / "flow.py").write_text(USES_HELPER.format(name="spec", wid="two"))
    reg = WorkflowRegistry()
    cat = WorkflowCatalog([str(one), str(two)], reg)
    assert not cat.rescan().new_errors
    assert run_once(reg, "one") == {"limit": 1} and run_once(reg, "two") == {"limit": 2}


def test_a_save_that_would_remove_workflows_is_held_for_a_grace_period(tmp_path):
    from abstractruntime.core.clock import ManualClock

    clock = ManualClock()
    write(tmp_path / "flow.py", "a")
    reg = WorkflowRegistry()
    cat = WorkflowCatalog([str(tmp_path)], reg, clock=clock)
    cat.rescan(grace_s=1.0)
    v1 = reg.get("w").version
    (tmp_path / "flow.py").write_text("")  # an in-place save, caught with the file still empty
    r = cat.rescan(grace_s=1.0)
    assert not r.changes and r.retry_after == 1.0 and reg.get("w").version == v1  # still serving
    clock.advance(0.5)
    write(tmp_path / "flow.py", "b")  # the save completes: applied at once, nothing removed
    r = cat.rescan(grace_s=1.0)
    assert [c.workflow_id for c in r.changes] == ["w"] and r.retry_after is None
    assert run_once(reg) == {"tag": "b", "loads": 1}
    (tmp_path / "flow.py").write_text("# the workflows moved out of this file\n")  # on purpose, this time
    assert cat.rescan(grace_s=1.0).retry_after == 1.0 and reg.get("w") is not None
    clock.advance(1.0)
    r = cat.rescan(grace_s=1.0)
    assert [(c.workflow_id, c.new_version) for c in r.changes] == [("w", None)] and reg.get("w") is None
    # An explicit reload (no grace) applies at once.
    write(tmp_path / "flow.py", "c")
    cat.rescan()
    (tmp_path / "flow.py").write_text("")
    assert cat.rescan().changes[0].new_version is None


def test_a_due_timer_stranded_by_a_new_version_names_the_version_it_waited_under():
    from abstractruntime.core.clock import ManualClock
    from abstractruntime.core.timeutil import epoch_to_iso

    clock = ManualClock()
    until = epoch_to_iso(clock.time() + 60)

    def wait(run, ctx):
        return StepPlan(node_id="wait", effect=Effect(EffectType.WAIT_UNTIL, {"until": until}), next_node="end")

    v1 = WorkflowSpec(workflow_id="t", entry_node="wait", nodes={"wait": wait, "end": _end("v1")})
    v1.version = "v1"
    reg = WorkflowRegistry([v1])
    rt = Runtime(
        run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore(), workflow_registry=reg, clock=clock
    )
    run = rt.start_and_tick(workflow=v1).run_id  # waiting for the timer
    v2 = WorkflowSpec(workflow_id="t", entry_node="wait", nodes={"wait": wait})  # without `end`
    v2.version = "v2"
    reg.register(v2, replace=True)
    clock.advance(61)
    with pytest.raises(RunStrandedError) as e:
        rt.tick(workflow=None, run_id=run)
    assert (e.value.data["run_version"], e.value.data["workflow_version"]) == ("v1", "v2")
    assert "waits under version v1" in str(e.value)
    assert rt.get_state(run).last_version == "v1"  # nothing committed under v2
