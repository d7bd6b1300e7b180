"""Runs people steer, through the real daemon and the real CLI: deadlines across a restart,
run-scoped events, choices, a run visible (and recovered) from its first instant, retry after a
hot-reloaded fix, fork from a middle record, a second SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from daemon_fixture import wait_for
from steering_fixture import _epoch, cli, serve_life, write_workflows

from abstractruntime.client import ProtocolError
from abstractruntime.client.connection import env_with_package
from abstractruntime.storage.ledger_chain import verify_ledger_chain


@pytest.fixture
def life(tmp_path):
    """A daemon serving the steering workflows (tests/e2e/steering_fixture.py)."""
    yield from serve_life(tmp_path)


# -- deadlines ---------------------------------------------------------------------------------------


def test_a_deadline_fires_across_a_daemon_restart_and_a_late_answer_is_refused(life):
    d = life
    with d.client() as c:
        slow = c.start("expense", {"amount": 50, "manager_timeout_s": 1.5, "director_timeout_s": 3600}).state
        quick = c.start("expense", {"amount": 20, "manager_timeout_s": 3600}).state
        assert slow.waiting.until and slow.waiting.details["deadline"] == {"on_timeout": "escalate"}
        # Answered in time: the deadline never fires.
        assert c.resume(quick.run_id, {"text": "reject"}).output == {"status": "rejected", "escalated": False}
    d.stop()  # down before the deadline...
    wait_for(lambda: time.time() > _epoch(slow.waiting.until) + 0.2, what="the deadline to pass")
    d.start()  # ...up after it: the deadline is a durable timer like any other
    with d.client() as c:
        st = wait_for(lambda: (s := c.state(slow.run_id)).current_node == "escalate" and s, what="the escalation")
        assert st.status == "waiting" and st.waiting.prompt.startswith("Director")
        assert st.vars["decision"]["timed_out"] is True and st.vars["escalated"] is True
        # The manager's answer comes late: the wait it answered is over.
        late = cli(d, "resume", slow.run_id, "--text", "approve", "--wait-key", slow.waiting.wait_key)
        assert late.returncode == 1 and "waits on" in late.stderr
        records = c.ledger(slow.run_id).records
        assert [r.result for r in records if "timed_out" in (r.result or {})][0]["timed_out"]["to_node"] == "escalate"


# -- events and choices ---------------------------------------------------------------------------------


def test_a_run_scoped_event_from_the_cli(life):
    d = life
    rid = json.loads(cli(d, "start", "expense", "--vars", '{"amount": 5}', "--json").stdout)["run_id"]
    assert cli(d, "answer", rid, "--text", "approve").returncode == 4  # now it waits for its payment
    state = cli(d, "state", rid).stdout
    assert f"abstractruntime emit expense_paid --run {rid}" in state
    missing = cli(d, "emit", "expense_paid", "--scope", "run")
    assert missing.returncode == 2 and "--run RUN_ID" in missing.stderr
    with d.client() as c:  # over the protocol, the same mistake is invalid params, not a daemon bug
        with pytest.raises(ProtocolError) as e:
            c.emit_event("expense_paid", {}, scope="run")
        assert e.value.code == -32602 and "give run_id" in str(e.value)
    sent = cli(d, "emit", "expense_paid", "--run", rid, "--payload", '{"amount": 5}')
    assert sent.returncode == 0 and rid in sent.stdout
    assert json.loads(cli(d, "state", rid, "--json").stdout)["output"]["status"] == "paid"


def test_choices_are_refused_over_the_protocol_and_the_run_keeps_waiting(life):
    with life.client() as c:
        rid = c.start("expense", {"amount": 5}).run_id
        with pytest.raises(ProtocolError) as e:
            c.resume(rid, {"text": "maybe"})
        assert e.value.code == -32602 and "'approve', 'reject'" in str(e.value)
        assert e.value.raw_data["choices"] == ["approve", "reject"]
        assert c.state(rid).status == "waiting"


# -- the first instant -------------------------------------------------------------------------------------


def test_a_run_is_listed_during_its_first_step_and_recovered_after_a_sigkill(life):
    d = life
    out = cli(d, "start", "gated", "--no-wait")
    rid = out.stdout.strip()
    assert out.returncode == 0 and len(rid) == 36, out.stderr
    listed = cli(d, "runs", "--json")
    assert [(r["run_id"], r["status"]) for r in json.loads(listed.stdout)["runs"]] == [(rid, "running")]
    d.kill(signal.SIGKILL)  # during its first node
    (d.workflows / "gate").write_text("open")
    d.start()
    with d.client() as c:
        st = wait_for(lambda: (s := c.state(rid)).status == "completed" and s, what="the recovered run")
        assert st.output == {"passed": True}


def test_ctrl_c_while_waiting_prints_the_run_id_and_how_to_follow_it(life):
    d = life
    proc = subprocess.Popen(
        [sys.executable, "-m", "abstractruntime", "execute", "gated", "--socket", d.socket],
        cwd=d.tmp,
        env=env_with_package(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with d.client() as c:
        wait_for(lambda: c.runs(status="running").runs, what="the run to be stored")
        rid = c.runs(status="running").runs[0].run_id
        wait_for(lambda: c.status().subscriptions >= 1, what="the CLI to follow the run")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and f"abstractruntime watch {rid}" in err
    (d.workflows / "gate").write_text("open")


# -- retry and fork ------------------------------------------------------------------------------------------


def test_retry_after_fixing_the_node_then_fork_from_a_middle_record(life):
    d = life
    out = cli(d, "execute", "shop", "--vars", '{"amount": 30}')
    assert out.returncode == 4 and "Ship it?" in out.stdout  # waiting for an answer
    rid = json.loads(cli(d, "runs", "--json").stdout)["runs"][0]["run_id"]
    failed = cli(d, "answer", rid, "--text", "yes")
    assert failed.returncode == 1 and "booking API down" in failed.stdout
    described = cli(d, "describe", rid).stdout
    assert "RuntimeError: booking API down" in described and "Traceback" in described
    assert "booking API down" in cli(d, "runs").stdout
    assert (
        "run " + rid + " (shop) failed at node book: node 'book' raised RuntimeError: booking API down"
        in d.log.read_text()
    )

    with d.client() as c:
        old = next(w.version for w in c.workflows() if w.workflow_id == "shop")
        write_workflows(d.workflows, broken=False)  # the fix; the daemon reloads it
        wait_for(lambda: next(w.version for w in c.workflows() if w.workflow_id == "shop") != old, what="the reload")
    retried = cli(d, "retry", rid, "--wait")
    assert retried.returncode == 0 and "completed" in retried.stdout, retried.stderr
    charges = (d.workflows / "charges.log").read_text().split()
    assert charges == ["30"]  # charged once, though the run failed and was retried

    with d.client() as c:
        source = c.ledger(rid, limit=1000).records
        asked = next(r for r in source if r.status == "waiting")  # after the quote, before the answer
        forked = cli(d, "fork", rid, "--seq", str(asked.seq), "--vars", '{"qty": 3}', "--wait", "--json")
        assert forked.returncode == 4, forked.stderr  # it asks again
        fid = json.loads(forked.stdout)["run_id"]
        assert c.state(fid).waiting.prompt == "Ship it?" and c.state(fid).vars["charge"]
        done = cli(d, "answer", fid, "--text", "no")
        assert done.returncode == 0 and json.loads(cli(d, "state", fid, "--json").stdout)["output"] == {
            "ok": {"text": "no"},
            "qty": 3,
        }
        records = [r.model_dump(mode="json") for r in c.ledger(fid, limit=1000).records]
        assert verify_ledger_chain(records)["ok"]
        origin = records[0]["result"]["forked"]
        assert (origin["run_id"], origin["seq"], origin["record_hash"]) == (rid, asked.seq, asked.record_hash)
        assert f"from run {rid} after record {asked.seq}" in cli(d, "describe", fid).stdout
    assert (d.workflows / "charges.log").read_text().split() == ["30"]  # the recorded charge was not run again


def test_a_second_sigterm_stops_at_once_and_the_run_is_recovered(life):
    d = life
    rid = cli(d, "start", "gated", "--no-wait").stdout.strip()
    with d.client() as c:
        wait_for(lambda: c.status().runs.get("running") == 1, what="the run to be running")
    d.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "finishing 1 in-flight step" in d.log.read_text(), what="the stop message")
    assert d.proc.poll() is None  # it waits for the step...
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(10) == 1  # ...until told again
    assert "stopping at once" in d.log.read_text()
    (d.workflows / "gate").write_text("open")
    d.start()
    with d.client() as c:
        assert wait_for(lambda: c.state(rid).status == "completed", what="the recovered run")
