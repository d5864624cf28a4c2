// Small DOM helpers: every text goes in through textContent (never innerHTML), so nothing the
// API answers can become markup.

type Child = Node | string | null | undefined | false;

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | boolean> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false) continue;
    node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c) node.append(c);
  return node;
}

export function table(caption: string, head: string[], rows: (string | Node)[][]): HTMLElement {
  const t = el("table", {}, el("caption", {}, caption));
  t.append(el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col" }, h)))));
  const body = el("tbody");
  for (const r of rows) body.append(el("tr", {}, ...r.map((c) => el("td", {}, c))));
  if (!rows.length) {
    body.append(el("tr", {}, el("td", { colspan: String(head.length) }, "Nothing yet.")));
  }
  t.append(body);
  return el("div", { class: "scroll" }, t);
}

export function notice(text: string, kind: "info" | "warn" | "error" = "info"): HTMLElement {
  return el("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag: string, attrs: Record<string, string | number>): SVGElement {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

/** A bar chart as hand-written SVG, with a text alternative for screen readers. */
export function bars(
  title: string,
  points: [string, number][],
  format: (v: number) => string = String,
): HTMLElement {
  const width = 640;
  const height = 180;
  const pad = 24;
  const max = Math.max(1, ...points.map(([, v]) => v));
  const chart = svg("svg", {
    viewBox: `0 0 ${width} ${height + pad}`,
    role: "img",
    "aria-label": `${title}: ${points.map(([k, v]) => `${k} ${format(v)}`).join(", ") || "no data"}`,
    class: "chart",
  });
  const step = points.length ? (width - pad) / points.length : 0;
  points.forEach(([label, value], i) => {
    const h = (value / max) * (height - pad);
    const bar = svg("rect", {
      x: pad + i * step + 1,
      y: height - h,
      width: Math.max(1, step - 2),
      height: h,
      class: "bar",
    });
    const tip = svg("title", {});
    tip.textContent = `${label}: ${format(value)}`;
    bar.append(tip);
    chart.append(bar);
  });
  const axis = svg("text", { x: pad, y: height + pad - 4, class: "axis" });
  axis.textContent = points.length ? `${points[0][0]} … ${points[points.length - 1][0]}` : "";
  const top = svg("text", { x: pad, y: 12, class: "axis" });
  top.textContent = `max ${format(max)}`;
  chart.append(axis, top);
  return el("figure", {}, el("figcaption", {}, title), chart as unknown as Node);
}
