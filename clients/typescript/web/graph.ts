/**
 * A workflow's graph as SVG: the nodes from its spec, the edges as observed in ledgers (a node
 * function picks its successor at run time, so the spec has no edge list), this run's path
 * drawn thick and the current node marked. Marks are shapes and text, not only colour.
 */
const SVG = "http://www.w3.org/2000/svg";
const W = 150;
const H = 34;
const GAP_X = 24;
const GAP_Y = 34;

export interface GraphInput {
  nodes: string[];
  entry: string;
  /** Observed transitions, "a>b" (from any run's ledger). */
  edges: Set<string>;
  /** This run's nodes in the order it ran them. */
  path: string[];
  current: string | null;
}

function el<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number>): SVGElementTagNameMap[K] {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

/** The node sequence of a ledger: each record's node, repeats of the same node folded. */
export function nodePath(records: { node_id: string; result?: Record<string, unknown> | null }[]): string[] {
  const out: string[] = [];
  for (const r of records) if (out[out.length - 1] !== r.node_id) out.push(r.node_id);
  return out;
}

export function edgesOf(path: string[], into: Set<string> = new Set()): Set<string> {
  for (let i = 1; i < path.length; i++) into.add(`${path[i - 1]}>${path[i]}`);
  return into;
}

export function renderGraph(g: GraphInput): SVGSVGElement {
  // Layers: the shortest observed distance from the entry node; nodes never reached go last.
  const all = [...g.nodes];
  for (const p of g.path) if (!all.includes(p)) all.push(p); // a node of an older version
  const out = new Map<string, string[]>();
  for (const e of g.edges) {
    const [a, b] = e.split(">");
    out.set(a, [...(out.get(a) ?? []), b]);
  }
  const depth = new Map<string, number>([[g.entry, 0]]);
  const queue = [g.entry];
  while (queue.length) {
    const n = queue.shift()!;
    for (const m of out.get(n) ?? []) {
      if (!depth.has(m)) {
        depth.set(m, depth.get(n)! + 1);
        queue.push(m);
      }
    }
  }
  let maxDepth = Math.max(0, ...depth.values());
  const layers: string[][] = [];
  for (const n of all) {
    const d = depth.get(n) ?? ++maxDepth;
    depth.set(n, d);
    (layers[d] ??= []).push(n);
  }
  const rows = layers.filter(Boolean);
  const widest = Math.max(1, ...rows.map((r) => r.length));
  const width = widest * (W + GAP_X) + GAP_X;
  const height = rows.length * (H + GAP_Y) + GAP_Y;
  const pos = new Map<string, { x: number; y: number }>();
  rows.forEach((row, i) => {
    const offset = (width - row.length * (W + GAP_X) + GAP_X) / 2;
    row.forEach((n, j) => pos.set(n, { x: offset + j * (W + GAP_X), y: GAP_Y / 2 + i * (H + GAP_Y) }));
  });

  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", class: "graph" });
  const title = el("title", {});
  title.textContent = `Graph of ${all.length} nodes; this run went ${g.path.join(" → ") || "nowhere yet"}`;
  svg.append(title);
  const defs = el("defs", {});
  for (const [id, cls] of [
    ["arrow", "edge-head"],
    ["arrow-on", "edge-head on-path"],
  ]) {
    const m = el("marker", {
      id,
      viewBox: "0 0 10 10",
      refX: 9,
      refY: 5,
      markerWidth: 9,
      markerHeight: 9,
      markerUnits: "userSpaceOnUse", // the same head on thin and thick edges
      orient: "auto",
    });
    m.append(el("path", { d: "M0,0 L10,5 L0,10 z", class: cls }));
    defs.append(m);
  }
  svg.append(defs);

  const taken = edgesOf(g.path);
  for (const e of g.edges) {
    const [a, b] = e.split(">");
    const p = pos.get(a);
    const q = pos.get(b);
    if (!p || !q) continue;
    const on = taken.has(e);
    const x1 = p.x + W / 2;
    const x2 = q.x + W / 2;
    let d: string;
    if (q.y > p.y) d = `M${x1},${p.y + H} C${x1},${p.y + H + GAP_Y / 2} ${x2},${q.y - GAP_Y / 2} ${x2},${q.y}`;
    else {
      // Back or sideways edge (a loop): around the right of the boxes.
      const bx = Math.max(p.x, q.x) + W + GAP_X / 2;
      d = `M${p.x + W},${p.y + H / 2} C${bx},${p.y + H / 2} ${bx},${q.y + H / 2} ${q.x + W},${q.y + H / 2}`;
    }
    svg.append(
      el("path", {
        d,
        class: on ? "edge on-path" : "edge",
        "marker-end": on ? "url(#arrow-on)" : "url(#arrow)",
        "data-edge": e,
      }),
    );
  }
  const visited = new Set(g.path);
  for (const n of all) {
    const p = pos.get(n)!;
    const cls = ["node", visited.has(n) ? "on-path" : "", n === g.current ? "current" : "", g.nodes.includes(n) ? "" : "gone"];
    const grp = el("g", { class: cls.filter(Boolean).join(" "), "data-node": n, transform: `translate(${p.x},${p.y})` });
    grp.append(el("rect", { width: W, height: H, rx: 6 }));
    const t = el("text", { x: W / 2, y: H / 2 + 5, "text-anchor": "middle" });
    const mark = n === g.current ? "▶ " : visited.has(n) ? "✓ " : "";
    t.textContent = mark + (n.length > 18 ? n.slice(0, 17) + "…" : n);
    grp.append(t);
    const tip = el("title", {});
    tip.textContent = `${n}${n === g.current ? " (current)" : visited.has(n) ? " (this run passed here)" : ""}${g.nodes.includes(n) ? "" : " (not in the version serving)"}`;
    grp.append(tip);
    svg.append(grp);
  }
  return svg;
}
