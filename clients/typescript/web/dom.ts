/** A few helpers to build the page's DOM without a framework. */

type Child = Node | string | number | null | undefined | false | Child[];
type Attrs = Record<string, string | number | boolean | EventListener | null | undefined>;

/** `h("button", { onclick: fn, class: "x" }, "Go")` */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v as EventListener);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

export function append(el: Element, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

export function clear(el: Element, ...children: Child[]): Element {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** "3 s ago", "5 min ago", ... from an ISO time. */
export function age(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return "-";
  const s = Math.max(0, (now - Date.parse(iso)) / 1000);
  if (s < 60) return `${Math.floor(s)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function shortId(id: string): string {
  return id.slice(0, 8);
}

/** A status as text with a mark, so it reads without colour. */
export function statusBadge(status: string, extra = ""): HTMLElement {
  const marks: Record<string, string> = {
    running: "▶",
    waiting: "‖",
    completed: "✓",
    failed: "✗",
    cancelled: "■",
  };
  return h("span", { class: `status status-${status}` }, `${marks[status] ?? "•"} ${status}${extra}`);
}

export function json(value: unknown, max = 400): string {
  let text: string;
  try {
    text = JSON.stringify(value);
  } catch {
    text = String(value);
  }
  return text.length > max ? text.slice(0, max) + "…" : text;
}

/** `fn` at most once per `ms`: the calls in between fold into one, made at the end. */
export function throttle(fn: () => void, ms: number): () => void {
  let timer: ReturnType<typeof setTimeout> | null = null;
  return () => {
    if (timer === null) {
      timer = setTimeout(() => {
        timer = null;
        fn();
      }, ms);
    }
  };
}
