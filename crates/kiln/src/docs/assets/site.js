// Kiln docs: draws the DAG and column lineage graphs as SVG and evaluates selections.
// Kiln's own code, no dependencies; the data is the page's #kiln-data document.
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const KINDS = ["value", "filter", "join", "group", "order"];
  const body = document.body;
  const root = body.dataset.root || "";
  const data = JSON.parse(document.getElementById("kiln-data").textContent);

  function el(name, attrs, parent) {
    const e = document.createElementNS(SVG, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }

  // Layered layout: `layer` per node id, `height` per node id; orders each layer by the
  // barycenter of its neighbours (four sweeps) and stacks it. Returns {x, y} per id.
  function layout(ids, edges, layer, height, colWidth, gap) {
    const layers = [];
    for (const id of ids) (layers[layer[id]] = layers[layer[id]] || []).push(id);
    const up = {}, down = {};
    for (const id of ids) { up[id] = []; down[id] = []; }
    for (const [a, b] of edges) { if (a in up && b in up) { down[a].push(b); up[b].push(a); } }
    const pos = {};
    const index = () => layers.forEach((l) => (l || []).forEach((id, i) => (pos[id] = i)));
    index();
    const sweep = (forward) => {
      const order = forward ? layers.keys() : [...layers.keys()].reverse();
      for (const li of order) {
        const l = layers[li];
        if (!l) continue;
        const key = {};
        for (const id of l) {
          const nb = forward ? up[id] : down[id];
          key[id] = nb.length ? nb.reduce((s, n) => s + pos[n], 0) / nb.length : pos[id];
        }
        l.sort((a, b) => key[a] - key[b] || pos[a] - pos[b]);
        l.forEach((id, i) => (pos[id] = i));
      }
    };
    for (let i = 0; i < 4; i++) sweep(i % 2 === 0);
    const xy = {};
    let maxY = 0;
    layers.forEach((l, li) => {
      let y = gap;
      for (const id of l || []) {
        xy[id] = { x: gap + li * colWidth, y: y };
        y += height[id] + gap;
      }
      maxY = Math.max(maxY, y);
    });
    return { xy: xy, width: gap * 2 + layers.length * colWidth, height: maxY };
  }

  function curve(parent, x1, y1, x2, y2, attrs) {
    const mx = (x1 + x2) / 2;
    attrs.d = `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`;
    return el("path", attrs, parent);
  }

  // ---- selection: the CLI's selector syntax (kiln_control::dag::Graph::select) ----
  function graphOperator(term, up) {
    if (up) {
      const m = /^(\d*)\+(.+)$/.exec(term);
      if (!m) return [null, term];
      return [m[1] === "" ? Infinity : Number(m[1]), m[2]];
    }
    const m = /^(.+)\+(\d*)$/.exec(term);
    if (!m) return [null, term];
    return [m[2] === "" ? Infinity : Number(m[2]), m[1]];
  }

  function select(nodes, selection) {
    const byName = new Map(nodes.map((n) => [n.name, n]));
    const users = new Map(nodes.map((n) => [n.name, []]));
    for (const n of nodes) for (const d of n.deps) if (users.has(d)) users.get(d).push(n.name);
    const out = new Set();
    const walk = (from, depth, next) => {
      let level = [from];
      const seen = new Set([from]);
      for (let i = 0; i < depth && level.length; i++) {
        const following = [];
        for (const n of level) for (const m of next(n)) if (!seen.has(m)) { seen.add(m); out.add(m); following.push(m); }
        level = following;
      }
    };
    for (const term of selection.split(/[ ,]/).filter((t) => t)) {
      const [upDepth, rest] = graphOperator(term, true);
      const [downDepth, core] = graphOperator(rest, false);
      let matched;
      if (core.startsWith("tag:")) {
        const tag = core.slice(4).toLowerCase();
        matched = nodes.filter((n) => n.tags.includes(tag)).map((n) => n.name);
      } else if (core.startsWith("path:")) {
        const prefix = core.slice(5).replace(/^(\.\/)+/, "");
        matched = nodes.filter((n) => n.path.startsWith(prefix)).map((n) => n.name);
      } else {
        const name = core.toLowerCase();
        matched = byName.has(name) ? [name] : [];
      }
      if (!matched.length) throw new Error(`nothing matches \`${term}\``);
      for (const m of matched) {
        out.add(m);
        if (upDepth !== null) walk(m, upDepth, (n) => (byName.get(n) || { deps: [] }).deps);
        if (downDepth !== null) walk(m, downDepth, (n) => users.get(n) || []);
      }
    }
    return out;
  }

  function hashParams() {
    const p = new URLSearchParams(location.hash.slice(1));
    return { select: p.get("select") || "", exclude: p.get("exclude") || "" };
  }

  // ---- DAG page ----
  function drawDag() {
    const nodes = data.nodes;
    const layer = {}, height = {};
    for (const n of nodes) {
      layer[n.name] = n.deps.reduce((m, d) => Math.max(m, (layer[d] ?? -1) + 1), 0);
      height[n.name] = 34;
    }
    const edges = [];
    for (const n of nodes) for (const d of n.deps) edges.push([d, n.name]);
    const W = 190, H = 34;
    const l = layout(nodes.map((n) => n.name), edges, layer, height, W + 70, 14);
    const host = document.getElementById("dag");
    const svg = el("svg", { width: l.width, height: l.height, class: "dag" }, host);
    const edgeLayer = el("g", { class: "edges" }, svg);
    const edgeEls = [];
    for (const [a, b] of edges) {
      const pa = l.xy[a], pb = l.xy[b];
      if (!pa || !pb) continue;
      const p = curve(edgeLayer, pa.x + W, pa.y + H / 2, pb.x, pb.y + H / 2, { class: "edge", "data-from": a, "data-to": b });
      edgeEls.push(p);
    }
    const nodeEls = new Map();
    for (const n of nodes) {
      const p = l.xy[n.name];
      const a = el("a", { href: root + n.page }, svg);
      const g = el("g", {
        class: `node k-${n.kind} st-${n.status}` + (n.plan === "build" ? " stale" : ""),
        transform: `translate(${p.x},${p.y})`, "data-name": n.name, "data-kind": n.kind, "data-status": n.status,
      }, a);
      el("rect", { width: W, height: H, rx: n.kind === "source" || n.kind === "stream" ? 17 : 4 }, g);
      const t = el("text", { x: 10, y: 15 }, g);
      t.textContent = n.name.length > 26 ? n.name.slice(0, 25) + "…" : n.name;
      const s = el("text", { x: 10, y: 28, class: "sub" }, g);
      s.textContent = `${n.kind} · ${n.status.replace("_", " ")}`;
      const title = el("title", {}, g);
      title.textContent = `${n.name} (${n.kind}, ${n.status})${n.summary ? "\n" + n.summary : ""}`;
      nodeEls.set(n.name, g);
    }
    const selectInput = document.getElementById("select");
    const excludeInput = document.getElementById("exclude");
    const status = document.getElementById("select-status");
    const apply = () => {
      const s = selectInput.value.trim(), x = excludeInput.value.trim();
      let chosen = null;
      status.textContent = "";
      status.classList.remove("error");
      try {
        if (s || x) {
          chosen = s ? select(nodes, s) : new Set(nodes.map((n) => n.name));
          if (x) for (const n of select(nodes, x)) chosen.delete(n);
          status.textContent = `${chosen.size} selected`;
        }
      } catch (e) {
        status.textContent = e.message;
        status.classList.add("error");
        chosen = null;
      }
      for (const [name, g] of nodeEls) {
        g.classList.toggle("selected", !!chosen && chosen.has(name));
        g.classList.toggle("dimmed", !!chosen && !chosen.has(name));
      }
      for (const p of edgeEls) {
        const on = !chosen || (chosen.has(p.dataset.from) && chosen.has(p.dataset.to));
        p.classList.toggle("dimmed", !on);
      }
    };
    const h = hashParams();
    selectInput.value = h.select;
    excludeInput.value = h.exclude;
    const update = () => {
      const p = new URLSearchParams();
      if (selectInput.value) p.set("select", selectInput.value);
      if (excludeInput.value) p.set("exclude", excludeInput.value);
      history.replaceState(null, "", "#" + p.toString());
      apply();
    };
    selectInput.addEventListener("input", update);
    excludeInput.addEventListener("input", update);
    apply();
  }

  // ---- lineage page ----
  function drawLineage() {
    const tables = new Map(data.tables.map((t) => [t.name, t]));
    const tableSelect = document.getElementById("table");
    const columnSelect = document.getElementById("column");
    const host = document.getElementById("lineage");
    for (const t of data.tables) {
      if (!t.lineage || !t.lineage.length) continue;
      const o = document.createElement("option");
      o.value = o.textContent = t.name;
      tableSelect.appendChild(o);
    }
    // Reverse index: base column -> [(table, column, kind)].
    const users = new Map();
    for (const t of data.tables) {
      for (const c of t.lineage || []) {
        for (const kind of KINDS) {
          for (const b of c[kind] || []) {
            const key = `${b.table}.${b.column}`;
            if (!users.has(key)) users.set(key, []);
            users.get(key).push({ table: t.name, column: c.column, kind: kind });
          }
        }
      }
    }
    const kindsOn = () => KINDS.filter((k) => document.querySelector(`.kinds input[value=${k}]`).checked);
    const fillColumns = (table, column) => {
      columnSelect.textContent = "";
      for (const c of (tables.get(table) || { lineage: [] }).lineage) {
        const o = document.createElement("option");
        o.value = o.textContent = c.column;
        columnSelect.appendChild(o);
      }
      if (column) columnSelect.value = column;
    };
    // `#table.column[!down][!kinds=value+join]`.
    const parseHash = () => {
      const [target, ...flags] = decodeURIComponent(location.hash.slice(1)).split("!");
      const dot = target.indexOf(".");
      if (dot < 0) return null;
      const kinds = flags.find((f) => f.startsWith("kinds="));
      return {
        table: target.slice(0, dot), column: target.slice(dot + 1), down: flags.includes("down"),
        kinds: kinds ? kinds.slice(6).split(/[+ ,]/) : KINDS,
      };
    };
    const draw = () => {
      const table = tableSelect.value, column = columnSelect.value;
      const down = document.querySelector("input[name=direction][value=down]").checked;
      const kinds = new Set(kindsOn());
      const kindFlag = kinds.size === KINDS.length ? "" : `!kinds=${KINDS.filter((k) => kinds.has(k)).join("+")}`;
      history.replaceState(null, "", `#${table}.${column}${down ? "!down" : ""}${kindFlag}`);
      host.textContent = "";
      const start = `${table}.${column}`;
      const cols = new Map(); // "t.c" -> {table, column}
      const edges = []; // {from, to, kind}
      const split = (key) => { const i = key.indexOf("."); return { table: key.slice(0, i), column: key.slice(i + 1) }; };
      cols.set(start, split(start));
      const queue = [start];
      while (queue.length) {
        const key = queue.shift();
        const { table: t, column: c } = split(key);
        let next = [];
        if (!down) {
          const entry = ((tables.get(t) || {}).lineage || []).find((l) => l.column === c);
          if (entry) for (const kind of KINDS) if (kinds.has(kind)) for (const b of entry[kind] || []) {
            const from = `${b.table}.${b.column}`;
            edges.push({ from: from, to: key, kind: kind });
            next.push(from);
          }
        } else {
          for (const u of users.get(key) || []) if (kinds.has(u.kind)) {
            const to = `${u.table}.${u.column}`;
            edges.push({ from: key, to: to, kind: u.kind });
            next.push(to);
          }
        }
        for (const n of next) if (!cols.has(n)) { cols.set(n, split(n)); queue.push(n); }
      }
      // Tables as boxes of their columns; layer = longest distance from the start.
      const byTable = new Map();
      for (const [key, c] of cols) {
        if (!byTable.has(c.table)) byTable.set(c.table, []);
        if (!byTable.get(c.table).includes(c.column)) byTable.get(c.table).push(c.column);
      }
      const tEdges = [...new Set(edges.map((e) => `${split(e.from).table}\u0000${split(e.to).table}`))]
        .map((s) => s.split("\u0000")).filter(([a, b]) => a !== b);
      const dist = new Map([[table, 0]]);
      for (let round = 0; round <= byTable.size; round++) {
        let changed = false;
        for (const [a, b] of tEdges) {
          const [near, far] = down ? [a, b] : [b, a];
          if (dist.has(near) && (dist.get(far) ?? -1) < dist.get(near) + 1) {
            dist.set(far, dist.get(near) + 1);
            changed = true;
          }
        }
        if (!changed) break;
      }
      const maxD = Math.max(...dist.values());
      const layer = {}, height = {};
      const ROW = 20, HEAD = 24, W = 230;
      for (const [t, cs] of byTable) {
        const d = dist.get(t) ?? 0;
        layer[t] = down ? d : maxD - d;
        height[t] = HEAD + cs.length * ROW + 4;
      }
      const l = layout([...byTable.keys()], tEdges.map(([a, b]) => [a, b]), layer, height, W + 110, 18);
      const svg = el("svg", { width: l.width, height: Math.max(l.height, 60), class: "lineage" }, host);
      const colPos = new Map();
      const boxes = el("g", { class: "tables" }, null);
      for (const [t, cs] of byTable) {
        const p = l.xy[t];
        const info = tables.get(t) || { columns: [], kind: "table", page: "" };
        const g = el("g", { class: `table k-${info.kind}`, transform: `translate(${p.x},${p.y})`, "data-table": t }, boxes);
        el("rect", { width: W, height: height[t], rx: 4 }, g);
        const a = el("a", { href: root + info.page }, g);
        const title = el("text", { x: 8, y: 16, class: "head" }, a);
        title.textContent = `${t} (${info.kind})`;
        cs.forEach((c, i) => {
          const y = HEAD + i * ROW;
          const type = (info.columns.find((x) => x.name === c) || {}).type || "";
          const row = el("g", { class: "col" + (`${t}.${c}` === start ? " start" : ""), "data-column": `${t}.${c}` }, g);
          el("rect", { x: 2, y: y, width: W - 4, height: ROW - 2, rx: 2 }, row);
          const name = el("text", { x: 8, y: y + 13 }, row);
          name.textContent = c;
          const ty = el("text", { x: W - 8, y: y + 13, class: "type" }, row);
          ty.textContent = type;
          colPos.set(`${t}.${c}`, { x: p.x, y: p.y + y + ROW / 2 - 1 });
        });
      }
      const edgeG = el("g", { class: "edges" }, svg);
      const seen = new Set();
      for (const e of edges) {
        const id = `${e.from}>${e.to}>${e.kind}`;
        if (seen.has(id)) continue;
        seen.add(id);
        const a = colPos.get(e.from), b = colPos.get(e.to);
        const p = curve(edgeG, a.x + W, a.y, b.x, b.y, {
          class: `edge k-${e.kind}`, "data-from": e.from, "data-to": e.to, "data-kind": e.kind,
        });
        const title = el("title", {}, p);
        title.textContent = `${e.from} → ${e.to} (${e.kind})`;
      }
      svg.appendChild(boxes);
      const summary = document.createElement("p");
      summary.id = "lineage-summary";
      summary.textContent = `${start}: ${seen.size} edge(s) ${down ? "downstream" : "upstream"} over ${byTable.size - 1} other table(s)`;
      host.prepend(summary);
    };
    const fromHash = () => {
      const h = parseHash();
      if (h && tables.has(h.table)) {
        tableSelect.value = h.table;
        fillColumns(h.table, h.column);
        document.querySelector(`input[name=direction][value=${h.down ? "down" : "up"}]`).checked = true;
        for (const k of KINDS) document.querySelector(`.kinds input[value=${k}]`).checked = h.kinds.includes(k);
      } else {
        fillColumns(tableSelect.value);
      }
      draw();
    };
    tableSelect.addEventListener("change", () => { fillColumns(tableSelect.value); draw(); });
    columnSelect.addEventListener("change", draw);
    for (const i of document.querySelectorAll(".toolbar input")) i.addEventListener("change", draw);
    window.addEventListener("hashchange", fromHash);
    if (tableSelect.options.length) fromHash();
    else host.textContent = "No product has column lineage yet (does the project compile?).";
  }

  if (body.dataset.page === "dag") drawDag();
  if (body.dataset.page === "lineage") drawLineage();

  // `kiln docs --serve`: reload when the site is rebuilt.
  if (location.protocol === "http:") {
    let seen = null;
    setInterval(() => {
      fetch("/__kiln/version", { cache: "no-store" }).then((r) => r.text()).then((v) => {
        if (seen !== null && v !== seen) location.reload();
        seen = v;
      }).catch(() => {});
    }, 1000);
  }
})();
