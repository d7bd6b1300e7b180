/**
 * The daemon's web page: runs, one run (header, graph, timeline, actions), workflows. One more
 * thin client of the protocol: every figure on it comes from a protocol call or a
 * `runtime/event`, through the TypeScript client over a WebSocket (`rpc.ts`).
 *
 * Views are addressed by the URL's hash (`#/`, `#/run/<id>`, `#/workflows`), so the back
 * button, reloads and links work. One subscription to every run's events feeds the view shown.
 */
import type * as P from "../src/generated/protocol";
import { RuntimeError } from "../src/core";
import { age, append, clear, h, json, shortId, statusBadge, throttle } from "./dom";
import { edgesOf, nodePath, renderGraph } from "./graph";
import { WebRuntimeClient } from "./rpc";

const PAGE = 50;
const STATUSES = ["running", "waiting", "completed", "failed", "cancelled"];

let rt: WebRuntimeClient | null = null;
let workflows: P.WorkflowInfo[] = [];
let view: View | null = null;
const main = document.getElementById("main")!;
const banner = document.getElementById("banner")!;
const conn = document.getElementById("conn")!;

interface View {
  event(ev: P.EventNotification): void;
  workflowsChanged?(): void;
  dispose?(): void;
}

// -- connection ---------------------------------------------------------------------------------

function setConn(text: string, state: "ok" | "down" | "wait"): void {
  conn.textContent = text;
  conn.className = `conn conn-${state}`;
  document.body.dataset.conn = state;
}

function say(text: string, kind: "error" | "info" = "info"): void {
  clear(banner, text ? h("p", { class: kind, role: kind === "error" ? "alert" : "status" }, text) : null);
}

function problem(e: unknown): string {
  if (e instanceof RuntimeError) return `${e.message} (${e.errorName})`;
  return String((e as Error)?.message ?? e);
}

async function boot(): Promise<void> {
  setConn("connecting…", "wait");
  try {
    rt = await WebRuntimeClient.connectTo();
  } catch (e) {
    setConn("not connected", "down");
    clear(
      main,
      h(
        "section",
        { class: "signin" },
        h("h2", {}, "Not signed in"),
        h("p", {}, e instanceof RuntimeError ? e.message : problem(e)),
        h("p", {}, "Run ", h("code", {}, "abstractruntime ui"), " in the project: it opens this page signed in."),
      ),
    );
    return;
  }
  setConn("live", "ok");
  rt.onWorkflowsChanged((change) => {
    void loadWorkflows().then(() => view?.workflowsChanged?.());
    const errs = change.new_errors ?? [];
    say(
      errs.length
        ? `Reload: ${errs.length} file(s) failed to load: ${errs.map((e) => `${e.file}:${e.line ?? "?"}`).join(", ")}`
        : `Reloaded: ${change.changed.map((c) => c.workflow_id).join(", ") || "no workflow changed"}` +
            (change.stranded.length ? `; ${change.stranded.length} run(s) stranded (see Workflows)` : ""),
      errs.length ? "error" : "info",
    );
  });
  await loadWorkflows();
  void follow();
  window.addEventListener("hashchange", route);
  route();
}

async function loadWorkflows(): Promise<void> {
  if (rt) workflows = await rt.workflows();
}

/** Every run's events, for as long as the page is open. When the connection drops, the client
 * reconnects and resumes after the last event it delivered, so the views miss nothing. */
async function follow(): Promise<void> {
  const client = rt!;
  const watch = setInterval(() => client.isClosed && setConn("reconnecting…", "wait"), 1000);
  try {
    for await (const ev of client.subscribe({
      reconnectTimeoutMs: 60_000,
      onSubscribed: () => setConn("live", "ok"),
    })) {
      view?.event(ev);
    }
  } catch (e) {
    setConn("disconnected", "down");
    // A daemon that restarted has a new token (unless $ABSTRACTRUNTIME_TOKEN sets it): the
    // browser's login no longer holds.
    say(`Lost the daemon: ${problem(e)}. Once it runs again, sign in with \`abstractruntime ui\`.`, "error");
  } finally {
    clearInterval(watch);
  }
}

// -- routing ------------------------------------------------------------------------------------

function route(): void {
  view?.dispose?.();
  view = null;
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query ?? "");
  for (const a of document.querySelectorAll("nav a")) {
    a.toggleAttribute("aria-current", a.getAttribute("href") === `#${path === "/" ? "/" : path}`);
  }
  if (path.startsWith("/run/")) view = new RunView(decodeURIComponent(path.slice(5)));
  else if (path === "/workflows") view = new WorkflowsView();
  else view = new RunsView(params);
}

function go(hash: string): void {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function runLink(id: string, text = shortId(id)): HTMLElement {
  return h("a", { href: `#/run/${encodeURIComponent(id)}`, class: "run-id", title: id }, text);
}

function isStranded(s: { status: string; workflow_id: string; resume_node?: string | null }): boolean {
  if (s.status !== "waiting" || !workflows.length) return false;
  const wf = workflows.find((w) => w.workflow_id === s.workflow_id);
  return !wf || (s.resume_node != null && !wf.nodes.includes(s.resume_node));
}

function waitingFor(s: P.RunSummaryModel): string {
  if (s.status === "failed") return (s.error ?? "").split("\n")[0];
  if (s.status !== "waiting") return "";
  if (isStranded(s)) return `stranded at ${s.resume_node}: migrate it (Workflows)`;
  if (s.paused) return "paused";
  if (s.wait_reason === "user") return s.prompt ?? "an answer";
  if (s.wait_reason === "until") return `the time ${s.until}`;
  if (s.wait_reason === "event") return `event ${eventName(s.wait_key)}`;
  if (s.wait_reason === "subworkflow") return "a child run";
  return `${s.wait_reason ?? "?"} ${s.wait_key ?? ""}`;
}

/** A run the "waiting for an answer" list shows: it waits for a person's answer, or a reload stranded it. */
function asksAPerson(s: P.RunSummaryModel): boolean {
  return s.status === "waiting" && (s.wait_reason === "user" || isStranded(s));
}

function waitingItem(s: P.RunSummaryModel): HTMLElement {
  return h("li", { "data-run": s.run_id }, runLink(s.run_id), ` ${s.workflow_id}: `, h("q", {}, waitingFor(s)));
}

function eventName(key: string | null | undefined): string {
  const parts = (key ?? "").split(":");
  return parts[parts.length - 1] ?? "";
}

// -- runs ---------------------------------------------------------------------------------------

class RunsView implements View {
  private rows = new Map<string, HTMLTableRowElement>();
  private tbody = h("tbody");
  private waiting = h("div", { class: "waiting-list" });
  private footer = h("p", { class: "pager" });
  private status: string;
  private workflow: string;
  private cursor: string | null;
  private history: string[];
  // Events that come while the page is read: applied after it (a newer status wins, by updated_at).
  private held: P.EventNotification[] | null = [];
  private search = h("input", {
    type: "search",
    id: "search",
    placeholder: "run id (press / to search)",
    "aria-label": "Search by run id",
    autocomplete: "off",
  }) as HTMLInputElement;

  constructor(params: URLSearchParams) {
    this.status = params.get("status") ?? "";
    this.workflow = params.get("workflow") ?? "";
    this.cursor = params.get("cursor");
    this.history = (params.get("back") ?? "").split(",").filter(Boolean);
    this.search.value = params.get("q") ?? "";
    this.render();
    void this.load();
  }

  private hash(changes: Record<string, string | null>): string {
    const p = new URLSearchParams();
    const all = { status: this.status, workflow: this.workflow, q: this.search.value, ...changes };
    for (const [k, v] of Object.entries(all)) if (v) p.set(k, v);
    const s = p.toString();
    return s ? `#/?${s}` : "#/";
  }

  private render(): void {
    const statusSel = h(
      "select",
      { id: "filter-status", "aria-label": "Status", onchange: (e: Event) => go(this.hash({ status: (e.target as HTMLSelectElement).value })) },
      h("option", { value: "" }, "any status"),
      STATUSES.map((s) => h("option", { value: s, selected: s === this.status }, s)),
    );
    const wfSel = h(
      "select",
      { id: "filter-workflow", "aria-label": "Workflow", onchange: (e: Event) => go(this.hash({ workflow: (e.target as HTMLSelectElement).value })) },
      h("option", { value: "" }, "any workflow"),
      workflows.map((w) => h("option", { value: w.workflow_id, selected: w.workflow_id === this.workflow }, w.workflow_id)),
    );
    const form = h(
      "form",
      { class: "filters", role: "search", onsubmit: (e: Event) => (e.preventDefault(), void this.find()) },
      h("label", {}, "Status ", statusSel),
      h("label", {}, "Workflow ", wfSel),
      h("label", {}, "Run ", this.search),
      h("button", { type: "submit" }, "Find"),
    );
    this.search.addEventListener("input", () => this.filterRows());
    clear(
      main,
      h("section", { "aria-labelledby": "waiting-h" }, h("h2", { id: "waiting-h" }, "Waiting for an answer"), this.waiting),
      h(
        "section",
        { "aria-labelledby": "runs-h" },
        h("h2", { id: "runs-h" }, "Runs"),
        form,
        h(
          "table",
          { class: "runs", id: "runs" },
          h(
            "thead",
            {},
            h("tr", {}, ["Run", "Workflow", "Status", "Node", "Waiting for / error", "Updated"].map((t) => h("th", { scope: "col" }, t))),
          ),
          this.tbody,
        ),
        this.footer,
      ),
    );
  }

  private async load(): Promise<void> {
    if (!rt) return;
    try {
      const [page, waiting] = await Promise.all([
        rt.runs({
          order: "newest",
          limit: PAGE,
          ...(this.status ? { status: this.status as P.RunsParams["status"] } : {}),
          ...(this.workflow ? { workflow_id: this.workflow } : {}),
          ...(this.cursor ? { cursor: this.cursor } : {}),
        }),
        rt.runs({ status: "waiting", order: "newest", limit: 100 }),
      ]);
      this.tbody.replaceChildren();
      this.rows.clear();
      for (const s of page.runs) this.tbody.append(this.row(s));
      if (!page.runs.length) this.tbody.append(h("tr", { class: "empty" }, h("td", { colspan: 6 }, "No runs match.")));
      this.filterRows();
      this.renderWaiting(waiting.runs);
      this.pager(page);
      const held = this.held ?? [];
      this.held = null;
      for (const ev of held) this.event(ev);
    } catch (e) {
      say(`Could not list runs: ${problem(e)}`, "error");
    }
  }

  private pager(page: P.RunsResult): void {
    const parts: (HTMLElement | string)[] = [];
    if (this.cursor !== null) {
      const back = [...this.history];
      const prev = back.pop() ?? "";
      parts.push(h("a", { href: this.hash({ cursor: prev || null, back: back.join(",") || null }), rel: "prev" }, "← newer"));
    }
    if (page.next) {
      parts.push(
        h(
          "a",
          { href: this.hash({ cursor: page.next, back: [...this.history, this.cursor ?? ""].join(",") || "," }), rel: "next" },
          `older → (${page.remaining ?? "more"} more)`,
        ),
      );
    }
    clear(this.footer, ...parts.flatMap((p, i) => (i ? [" · ", p] : [p])));
  }

  private renderWaiting(runs: P.RunSummaryModel[]): void {
    const asks = runs.filter(asksAPerson);
    clear(
      this.waiting,
      asks.length
        ? h("ul", {}, asks.map(waitingItem))
        : h("p", { class: "muted" }, "Nothing waits for a person."),
    );
  }

  private matches(s: P.RunSummaryModel): boolean {
    return (!this.status || s.status === this.status) && (!this.workflow || s.workflow_id === this.workflow);
  }

  private row(s: P.RunSummaryModel): HTMLTableRowElement {
    const marks = [
      s.parent_run_id ? h("span", { class: "tag" }, "child") : null,
      isStranded(s) ? h("span", { class: "tag warn" }, "stranded") : null,
    ];
    const tr = h(
      "tr",
      { "data-run": s.run_id, "data-status": s.status, "data-updated": s.updated_at, tabindex: 0, onkeydown: (e: Event) => (e as KeyboardEvent).key === "Enter" && go(`#/run/${s.run_id}`) },
      h("td", {}, runLink(s.run_id), " ", marks),
      h("td", { "data-label": "Workflow" }, s.workflow_id),
      h("td", { "data-label": "Status" }, statusBadge(s.status)),
      h("td", { "data-label": "Node" }, s.current_node),
      h("td", { class: "what" }, waitingFor(s)),
      h("td", { title: s.updated_at, "data-label": "Updated" }, age(s.updated_at)),
    ) as HTMLTableRowElement;
    this.rows.set(s.run_id, tr);
    return tr;
  }

  private filterRows(): void {
    const q = this.search.value.trim();
    for (const [id, tr] of this.rows) tr.hidden = !!q && !id.startsWith(q);
  }

  private async find(): Promise<void> {
    const q = this.search.value.trim();
    if (!q || !rt) return;
    const visible = [...this.rows.keys()].filter((id) => id.startsWith(q));
    if (visible.length === 1) return go(`#/run/${visible[0]}`);
    try {
      await rt.state(q);
      go(`#/run/${q}`);
    } catch (e) {
      say(visible.length ? `${visible.length} runs on this page start with ${q}` : `No run ${q}: ${problem(e)}`, visible.length ? "info" : "error");
    }
  }

  event(ev: P.EventNotification): void {
    if (ev.kind !== "state" || !ev.state) return;
    if (this.held) return void this.held.push(ev);
    const s = ev.state;
    const old = this.rows.get(s.run_id);
    if (old && (old.dataset.updated ?? "") > s.updated_at) return; // the page already shows a newer state
    if (old) {
      old.replaceWith(this.row(s));
    } else if (this.cursor === null && this.matches(s)) {
      this.tbody.querySelector("tr.empty")?.remove();
      this.tbody.prepend(this.row(s)); // newest first: a run we have not seen is a new one
      const rows = this.tbody.querySelectorAll("tr[data-run]");
      if (rows.length > PAGE) {
        // The first page stays a page: the oldest row moves on to the next one.
        const last = rows[rows.length - 1] as HTMLElement;
        this.rows.delete(last.dataset.run!);
        last.remove();
      }
    }
    this.filterRows();
    const li = this.waiting.querySelector(`li[data-run="${s.run_id}"]`);
    const asks = asksAPerson(s);
    if (li && !asks) li.remove();
    else if (!li && asks) {
      let ul = this.waiting.querySelector("ul");
      if (!ul) clear(this.waiting, (ul = h("ul")));
      ul.prepend(waitingItem(s));
    }
  }

  workflowsChanged(): void {
    this.held = [];
    void this.load();
  }
}

// -- one run ------------------------------------------------------------------------------------

class RunView implements View {
  private state: P.RunStateModel | null = null;
  private records: P.LedgerRecordModel[] = [];
  private observed = new Set<string>();
  private header = h("header", { class: "run-header" });
  private actions = h("section", { class: "actions", "aria-label": "Act on this run" });
  private graph = h("figure", { class: "graph-box" });
  private timeline = h("tbody");
  private live = h("pre", { class: "live", "aria-live": "polite", hidden: true });
  private chain = h("p", { class: "chain" });
  private children: P.RunSummaryModel[] = [];
  private disposed = false;
  // This run's events that come while its state and ledger are read: applied once they are,
  // so a record is neither lost nor put before the ones the read returns.
  private held: P.EventNotification[] | null = [];
  // A busy run appends many records: its chain is checked again once they pause.
  private reverify = throttle(() => void this.verify(), 250);

  constructor(private readonly runId: string) {
    clear(
      main,
      h("p", {}, h("a", { href: "#/" }, "← Runs")),
      this.header,
      this.actions,
      h("section", { "aria-labelledby": "graph-h" }, h("h3", { id: "graph-h" }, "Graph"), this.graph),
      h(
        "section",
        { "aria-labelledby": "tl-h" },
        h("h3", { id: "tl-h" }, "Timeline"),
        this.chain,
        h(
          "table",
          { class: "timeline", id: "timeline" },
          h(
            "thead",
            {},
            h("tr", {}, ["#", "Node", "Status", "Effect", "Attempt", "Took", "Version", "Result or error", ""].map((t) => h("th", { scope: "col" }, t))),
          ),
          this.timeline,
        ),
        this.live,
      ),
    );
    void this.load();
  }

  dispose(): void {
    this.disposed = true;
  }

  private async load(): Promise<void> {
    if (!rt) return;
    try {
      this.state = await rt.state(this.runId);
    } catch (e) {
      clear(this.header, h("h2", {}, `Run ${this.runId}`), h("p", { class: "error", role: "alert" }, problem(e)));
      return;
    }
    this.records = [];
    let after = 0;
    for (;;) {
      const page = await rt.ledger(this.runId, { after, limit: 1000 });
      this.records.push(...page.records);
      if (page.next == null) break;
      after = page.next;
    }
    this.children = (await rt.runs({ parent_run_id: this.runId, limit: 100 })).runs;
    this.renderHeader();
    this.renderActions();
    this.timeline.replaceChildren(...this.records.map((r) => this.recordRow(r)));
    const held = this.held ?? [];
    this.held = null;
    for (const ev of held) this.event(ev);
    void this.observe();
    void this.verify();
  }

  /** Edges seen in this run's ledger and in recent runs of the same workflow. */
  private async observe(): Promise<void> {
    const st = this.state!;
    edgesOf(nodePath(this.records), this.observed);
    this.renderGraph();
    try {
      const recent = await rt!.runs({ workflow_id: st.workflow_id, order: "newest", limit: 20 });
      for (const s of recent.runs) {
        if (s.run_id === this.runId || this.disposed) continue;
        const page = await rt!.ledger(s.run_id, { limit: 500 });
        edgesOf(nodePath(page.records), this.observed);
      }
    } catch {
      // the graph keeps what this run shows
    }
    if (!this.disposed) this.renderGraph();
  }

  private renderGraph(): void {
    const st = this.state!;
    const wf = workflows.find((w) => w.workflow_id === st.workflow_id);
    const path = nodePath(this.records);
    const current = st.status === "completed" || st.status === "cancelled" ? null : st.current_node;
    clear(
      this.graph,
      renderGraph({ nodes: wf?.nodes ?? path, entry: wf?.entry_node ?? path[0] ?? st.current_node, edges: this.observed, path, current }),
      h(
        "figcaption",
        {},
        `Path: ${path.join(" → ") || "(none yet)"}. `,
        current ? `Current node: ${current}. ` : "",
        "Thick boxes and ✓: nodes this run ran; ▶: where it is now; edges: transitions seen in ledgers.",
      ),
    );
  }

  private origin(): Record<string, any> | null {
    const first = this.records[0]?.result as Record<string, any> | undefined;
    return first && typeof first.forked === "object" ? first.forked : null;
  }

  private renderHeader(): void {
    const st = this.state!;
    const fork = this.origin();
    const version = st.workflow_version
      ? `${st.workflow_version}${st.last_version && st.last_version !== st.workflow_version ? ` (last step under ${st.last_version})` : ""}`
      : "-";
    clear(
      this.header,
      h("h2", {}, "Run ", h("code", { id: "run-id" }, st.run_id), " ", statusBadge(st.status)),
      h(
        "dl",
        {},
        h("dt", {}, "Workflow"),
        h("dd", {}, h("a", { href: `#/?workflow=${encodeURIComponent(st.workflow_id)}` }, st.workflow_id), ` @ ${version}`),
        h("dt", {}, "Node"),
        h("dd", {}, st.current_node),
        h("dt", {}, "Created"),
        h("dd", { title: st.created_at }, `${st.created_at} (${age(st.created_at)}); updated ${age(st.updated_at)}; ${st.steps} step(s)`),
        st.parent_run_id ? [h("dt", {}, "Parent"), h("dd", {}, runLink(st.parent_run_id, st.parent_run_id))] : null,
        this.children.length
          ? [h("dt", {}, "Children"), h("dd", {}, this.children.map((c) => [runLink(c.run_id), ` (${c.workflow_id}, ${c.status}) `]))]
          : null,
        fork
          ? [
              h("dt", {}, "Forked from"),
              h(
                "dd",
                { id: "fork-origin" },
                runLink(String(fork.run_id), String(fork.run_id)),
                ` after record ${fork.seq}`,
                fork.changed_vars ? `, with ${json(fork.changed_vars, 200)}` : "",
              ),
            ]
          : null,
        st.error ? [h("dt", {}, "Error"), h("dd", { class: "error" }, st.error.split("\n")[0])] : null,
      ),
    );
  }

  private renderActions(): void {
    const st = this.state!;
    const w = st.waiting;
    const parts: (HTMLElement | null)[] = [];
    if (st.status === "waiting" && w && isStranded({ status: st.status, workflow_id: st.workflow_id, resume_node: w.resume_to_node })) {
      parts.push(migrateForm(st.run_id, st.workflow_id, w.resume_to_node ?? null, () => void this.load()));
    } else if (st.status === "waiting" && w?.reason === "user") {
      const answer = (payload: Record<string, unknown>) => this.act(() => rt!.resume(st.run_id, payload, w.wait_key ?? undefined));
      const text = h("input", { type: "text", id: "answer-text", "aria-label": "Your answer", autocomplete: "off" }) as HTMLInputElement;
      parts.push(
        h(
          "form",
          { class: "answer", onsubmit: (e: Event) => (e.preventDefault(), answer({ text: text.value })) },
          h("p", { class: "prompt" }, w.prompt ?? "This run waits for an answer."),
          (w.choices ?? []).map((c) => h("button", { type: "button", class: "choice", onclick: () => answer({ text: c }) }, c)),
          w.allow_free_text || !(w.choices ?? []).length ? [text, h("button", { type: "submit" }, "Answer")] : null,
        ),
      );
    } else if (st.status === "waiting" && w?.reason === "event") {
      const name = eventName(w.wait_key);
      const payload = h("textarea", { id: "event-payload", rows: 2, "aria-label": "Event payload (JSON)" }, "{}") as HTMLTextAreaElement;
      parts.push(
        h(
          "form",
          {
            class: "emit",
            onsubmit: (e: Event) => {
              e.preventDefault();
              const value = parseJson(payload.value, "the payload");
              if (value === undefined) return;
              const scope = (w.wait_key ?? "").split(":")[1] as "global" | "session" | "run";
              const opts = scope === "run" ? { run_id: st.run_id } : scope === "session" ? { scope, session_id: (w.wait_key ?? "").split(":")[2] } : { scope };
              void this.act(() => rt!.emitEvent(name, value, opts));
            },
          },
          h("p", {}, `Waits for event `, h("code", {}, name), ` (${(w.wait_key ?? "").split(":")[1]} scope).`),
          h("label", {}, "Payload ", payload),
          h("button", { type: "submit" }, `Emit ${name}`),
        ),
      );
    }
    if (st.status === "failed") {
      parts.push(h("button", { type: "button", id: "retry", onclick: () => this.act(() => rt!.retry(st.run_id, { wait: false })) }, "Retry from the failed node"));
    }
    if (st.status !== "completed" && st.status !== "failed" && st.status !== "cancelled") {
      parts.push(
        h(
          "button",
          { type: "button", id: "cancel", class: "danger", onclick: () => confirm(`Cancel run ${st.run_id}?`) && this.act(() => rt!.cancel(st.run_id, "cancelled from the web page")) },
          "Cancel run",
        ),
      );
    }
    clear(this.actions, parts.length ? h("h3", {}, "Act") : null, parts);
  }

  private async act(fn: () => Promise<unknown>): Promise<void> {
    for (const b of this.actions.querySelectorAll("button")) (b as HTMLButtonElement).disabled = true;
    try {
      await fn();
      say("");
    } catch (e) {
      say(problem(e), "error");
    }
    await this.refresh();
  }

  private async refresh(): Promise<void> {
    if (!rt || this.disposed) return;
    try {
      this.state = await rt.state(this.runId);
    } catch {
      return;
    }
    this.renderHeader();
    this.renderActions();
    this.renderGraph();
  }

  private recordRow(r: P.LedgerRecordModel): HTMLTableRowElement {
    const took = r.ended_at ? `${Math.max(0, Date.parse(r.ended_at) - Date.parse(r.started_at))} ms` : "…";
    const fork = r.result && (r.result as Record<string, unknown>).forked;
    let what: (HTMLElement | string)[];
    if (r.error) {
      what = [
        h("span", { class: "error" }, r.error.split("\n")[0]),
        r.traceback ? h("details", { class: "traceback" }, h("summary", {}, "traceback"), h("pre", {}, r.traceback)) : "",
      ];
    } else if (fork) what = ["forked from ", runLink(String((fork as any).run_id)), ` after record ${(fork as any).seq}`];
    else what = [h("span", { title: r.result ? json(r.result, 4000) : "" }, summary(r.result))];
    const tr = h(
      "tr",
      { "data-seq": r.seq, "data-status": r.status },
      h("td", { "data-label": "#" }, r.seq),
      h("td", { "data-label": "Node" }, r.node_id),
      h("td", { "data-label": "Status" }, statusBadge(r.status)),
      h("td", { "data-label": "Effect" }, (r.effect?.type as string | undefined) ?? "-"),
      h("td", { "data-label": "Attempt" }, r.attempt ?? 1),
      h("td", { "data-label": "Took" }, took),
      h("td", { "data-label": "Version" }, h("code", {}, (r.workflow_version ?? "").slice(0, 8))),
      h("td", { class: "what" }, what),
      h("td", {}, h("button", { type: "button", class: "fork", "aria-label": `Fork from record ${r.seq}`, onclick: () => this.forkForm(tr, r.seq) }, "Fork here")),
    ) as HTMLTableRowElement;
    return tr;
  }

  private forkForm(tr: HTMLTableRowElement, seq: number): void {
    const next = tr.nextElementSibling;
    if (next?.classList.contains("fork-row")) return void next.remove();
    const vars = h("textarea", { id: `fork-vars-${seq}`, class: "fork-vars", rows: 3, "aria-label": "Vars to change (JSON)" }, "{}") as HTMLTextAreaElement;
    const form = h(
      "form",
      {
        onsubmit: async (e: Event) => {
          e.preventDefault();
          const value = parseJson(vars.value, "the vars");
          if (value === undefined) return;
          if (typeof value !== "object" || value === null || Array.isArray(value)) return say("The vars must be a JSON object.", "error");
          try {
            const res = await rt!.fork(this.runId, { seq, vars: value as Record<string, unknown>, wait: false });
            say("");
            go(`#/run/${res.run_id}`);
          } catch (err) {
            say(problem(err), "error");
          }
        },
      },
      h("label", {}, `Vars to change, merged over the state after record ${seq} (JSON): `, vars),
      h("button", { type: "submit", class: "fork-go" }, `Start a fork after record ${seq}`),
    );
    tr.after(h("tr", { class: "fork-row" }, h("td", { colspan: 9 }, form)));
    vars.focus();
  }

  private async verify(): Promise<void> {
    try {
      const v = await rt!.verify(this.runId);
      clear(
        this.chain,
        v.ok
          ? `Hash chain: ✓ verified, ${v.count} record(s)`
          : h("span", { class: "error", role: "alert" }, `Hash chain: ✗ broken at record ${v.first_bad_seq}: ${(v.problems ?? []).join("; ")}`),
      );
      this.chain.dataset.ok = String(v.ok);
    } catch (e) {
      clear(this.chain, `Hash chain: not checked (${problem(e)})`);
    }
  }

  event(ev: P.EventNotification): void {
    if (ev.run_id !== this.runId) return;
    if (this.held) return void this.held.push(ev);
    if (ev.kind === "progress" && ev.progress) {
      this.live.hidden = false;
      if (this.live.dataset.node !== ev.progress.node_id) {
        this.live.dataset.node = ev.progress.node_id;
        this.live.textContent = `${ev.progress.node_id} is answering:\n`;
      }
      this.live.append(ev.progress.text);
    } else if (ev.kind === "record" && ev.record) {
      const r = ev.record;
      if (this.records.some((x) => x.seq === r.seq)) return;
      this.records.push(r);
      this.timeline.append(this.recordRow(r));
      if (r.node_id === this.live.dataset.node && r.status !== "started") {
        this.live.hidden = true;
        delete this.live.dataset.node;
      }
      edgesOf(nodePath(this.records), this.observed);
      this.reverify();
    } else if (ev.kind === "state") {
      void this.refresh();
    }
  }

  workflowsChanged(): void {
    void this.refresh();
  }
}

/** A ledger result in words: what the step did, not its JSON (the JSON is the tooltip). */
function summary(result: Record<string, any> | null | undefined): string {
  if (!result) return "";
  if (result.started) return `started at ${result.started.node} with ${json(result.started.vars, 200)}`;
  if (result.wait) {
    const w = result.wait;
    const what = w.reason === "user" ? `“${w.prompt ?? "an answer"}”` : w.reason === "event" ? `event ${eventName(w.wait_key)}` : w.until ?? w.wait_key;
    return `waits (${w.reason}) for ${what}`;
  }
  if (result.resumed) {
    const p = result.resumed.payload;
    return p && typeof p.text === "string" && Object.keys(p).length === 1 ? `answered “${p.text}”` : `resumed with ${json(p, 200)}`;
  }
  if (result.migrated) return `migrated from ${result.migrated.from_node} to ${result.migrated.to_node}`;
  return json(result, 300);
}

function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text || "null");
  } catch (e) {
    say(`${what} is not JSON: ${(e as Error).message}`, "error");
    return undefined;
  }
}

function migrateForm(runId: string, workflowId: string, node: string | null, done: () => void): HTMLElement {
  const wf = workflows.find((w) => w.workflow_id === workflowId);
  const pick = h(
    "select",
    { "aria-label": `Node to resume run ${shortId(runId)} at` },
    (wf?.nodes ?? []).map((n) => h("option", { value: n, selected: n === wf?.entry_node }, n)),
  ) as HTMLSelectElement;
  return h(
    "form",
    {
      class: "migrate",
      "data-run": runId,
      onsubmit: async (e: Event) => {
        e.preventDefault();
        try {
          await rt!.migrate(runId, pick.value || undefined);
          say(`Migrated run ${runId} to node ${pick.value}.`);
        } catch (err) {
          say(problem(err), "error");
        }
        done();
      },
    },
    h("p", {}, runLink(runId), ` is stranded: it would resume at `, h("code", {}, node ?? "?"), wf ? ", which the version serving lacks." : ", and its workflow is gone."),
    wf ? [h("label", {}, "Resume at ", pick), " ", h("button", { type: "submit" }, "Migrate")] : null,
  );
}

// -- workflows ----------------------------------------------------------------------------------

class WorkflowsView implements View {
  private box = h("div");
  // Runs start waiting all the time on a busy daemon: the list is read again at most once a second.
  private reload = throttle(() => void this.load(), 1000);

  constructor() {
    clear(main, h("h2", {}, "Workflows"), this.box);
    void this.load();
  }

  private async load(): Promise<void> {
    if (!rt) return;
    const [list, waiting] = await Promise.all([rt.call("workflows/list", {}), rt.runs({ status: "waiting", limit: 1000 })]);
    workflows = list.workflows;
    const stranded = waiting.runs.filter(isStranded);
    clear(
      this.box,
      h(
        "table",
        { class: "workflows", id: "workflows" },
        h("thead", {}, h("tr", {}, ["Workflow", "Version", "Entry", "Nodes", "File", "Stranded"].map((t) => h("th", { scope: "col" }, t)))),
        h(
          "tbody",
          {},
          list.workflows.map((w) =>
            h(
              "tr",
              { "data-workflow": w.workflow_id },
              h("td", {}, h("a", { href: `#/?workflow=${encodeURIComponent(w.workflow_id)}` }, w.workflow_id)),
              h("td", {}, h("code", {}, w.version ?? "-")),
              h("td", {}, w.entry_node),
              h("td", {}, w.nodes.join(", ")),
              h("td", {}, w.source ?? "-", w.load_error ? h("p", { class: "error" }, `latest edit failed (line ${w.load_error.line ?? "?"}): ${w.load_error.message}`) : null),
              h("td", {}, w.stranded ? `${w.stranded}` : "0"),
            ),
          ),
        ),
      ),
      h("h3", {}, "Load errors"),
      list.load_errors?.length
        ? h("ul", { id: "load-errors" }, (list.load_errors ?? []).map((e) => h("li", { class: "error" }, h("code", {}, `${e.file}:${e.line ?? "?"}`), ` ${e.message}`)))
        : h("p", { class: "muted" }, "Every workflow file loads."),
      h("h3", {}, "Stranded runs"),
      stranded.length
        ? h("div", { id: "stranded" }, stranded.map((s) => migrateForm(s.run_id, s.workflow_id, s.resume_node ?? null, () => void this.load())))
        : h("p", { class: "muted" }, "No waiting run is stranded."),
    );
  }

  event(ev: P.EventNotification): void {
    if (ev.kind === "state" && ev.state?.status === "waiting") this.reload();
  }

  workflowsChanged(): void {
    void this.load();
  }
}

// -- keyboard -----------------------------------------------------------------------------------

document.addEventListener("keydown", (e) => {
  const t = e.target as HTMLElement;
  if (t.closest("input, textarea, select") || e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === "/") {
    e.preventDefault();
    if (!document.getElementById("search")) go("#/");
    setTimeout(() => document.getElementById("search")?.focus());
  } else if (e.key === "r") go("#/");
  else if (e.key === "w") go("#/workflows");
  else if (e.key === "j" || e.key === "k") {
    const rows = [...document.querySelectorAll<HTMLElement>("#runs tbody tr[data-run]:not([hidden])")];
    if (!rows.length) return;
    const at = rows.indexOf(document.activeElement as HTMLElement);
    const next = rows[Math.min(rows.length - 1, Math.max(0, at + (e.key === "j" ? 1 : -1)))];
    next.focus();
  }
});

append(document.getElementById("keys")!, ["Keys: / search · r runs · w workflows · j/k move · Enter open"]);
void boot();
