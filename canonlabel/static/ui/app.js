// canonlabel explore: a WebGL2 scatter of the items, a labels panel, curation and curves.
// No dependencies; an exported report sets window.__CANONLABEL_DATA__ and works offline.
"use strict";

const state = {
  data: null, selected: null, checked: [], view: { x: 0, y: 0, k: 1 },
  frames: [], stamps: [], pointsDrawn: 0, grid: null, readOnly: !!window.__CANONLABEL_DATA__,
};
window.__canonlabel = state;  // for tests and benchmarks

const $ = (id) => document.getElementById(id);
const hue = (i) => (i * 0.61803398875) % 1;

function headers(admin) {
  const h = { "content-type": "application/json" };
  const token = (admin && $("admin-token").value) || $("api-token").value;
  if (token) h.authorization = "Bearer " + token;
  return h;
}

async function api(path, { method = "GET", body, admin = false } = {}) {
  const r = await fetch(path, { method, headers: headers(admin), body: body && JSON.stringify(body) });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(typeof data.detail === "string" ? data.detail : r.status + " " + r.statusText);
  return data;
}

function say(text) { $("message").textContent = text || ""; }

// -- map ---------------------------------------------------------------------------------
const VERT = `#version 300 es
in vec2 pos; in float lab;
uniform vec2 scale; uniform vec2 offset; uniform float selected; uniform float size;
out vec4 color;
vec3 hsv(float h, float s, float v) {
  vec3 k = mod(vec3(5.0, 3.0, 1.0) + h * 6.0, 6.0);
  return v - v * s * clamp(min(k, 4.0 - k), 0.0, 1.0);
}
void main() {
  gl_Position = vec4(pos * scale + offset, 0.0, 1.0);
  bool on = selected < 0.0 || abs(lab - selected) < 0.5;
  gl_PointSize = on && selected >= 0.0 ? size * 2.0 : size;
  color = vec4(hsv(fract(lab * 0.61803398875), 0.65, 0.95), on ? 0.85 : 0.22);
}`;
const FRAG = `#version 300 es
precision mediump float; in vec4 color; out vec4 out_color;
void main() { vec2 d = gl_PointCoord - 0.5; if (dot(d, d) > 0.25) discard; out_color = color; }`;

function compile(gl) {
  const prog = gl.createProgram();
  for (const [type, src] of [[gl.VERTEX_SHADER, VERT], [gl.FRAGMENT_SHADER, FRAG]]) {
    const s = gl.createShader(type); gl.shaderSource(s, src); gl.compileShader(s);
    if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
    gl.attachShader(prog, s);
  }
  gl.linkProgram(prog);
  return prog;
}

const map = { gl: null, prog: null, n: 0, bounds: null };
window.__canonlabelMap = map;  // for tests

function setupMap() {
  const canvas = $("gl");
  const gl = canvas.getContext("webgl2", { antialias: false, preserveDrawingBuffer: true });
  if (!gl) { say("this browser has no WebGL2: the map is off"); return; }
  map.gl = gl; map.prog = compile(gl);
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const [mx, my] = toClip(e), f = Math.exp(-e.deltaY * 0.0015), v = state.view;
    v.x = mx - (mx - v.x) * f; v.y = my - (my - v.y) * f; v.k *= f; draw();
  }, { passive: false });
  let drag = null;
  // Shift + drag draws a lasso around items (for a split); a plain drag pans.
  canvas.addEventListener("mousedown", (e) => {
    if (e.shiftKey) { state.lassoPath = [toClip(e)]; state.lasso = []; draw(); } else drag = toClip(e);
  });
  window.addEventListener("mouseup", () => {
    drag = null;
    if (state.lassoPath) { finishLasso(state.lassoPath); state.lassoPath = null; draw(); }
  });
  canvas.addEventListener("mousemove", (e) => {
    const p = toClip(e);
    if (state.lassoPath) { state.lassoPath.push(p); draw(); }
    else if (drag) { state.view.x += p[0] - drag[0]; state.view.y += p[1] - drag[1]; drag = p; draw(); }
    else hover(e, p);
  });
  canvas.addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
  window.addEventListener("resize", draw);
}

function toClip(e) {
  const r = $("gl").getBoundingClientRect();
  return [((e.clientX - r.left) / r.width) * 2 - 1, 1 - ((e.clientY - r.top) / r.height) * 2];
}

function loadPoints(d) {
  const n = d.x.length, buf = new Float32Array(n * 3);
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (let i = 0; i < n; i++) {
    x0 = Math.min(x0, d.x[i]); x1 = Math.max(x1, d.x[i]); y0 = Math.min(y0, d.y[i]); y1 = Math.max(y1, d.y[i]);
  }
  map.bounds = { cx: (x0 + x1) / 2, cy: (y0 + y1) / 2, s: 1.9 / Math.max(x1 - x0, y1 - y0, 1e-9) };
  const b = map.bounds;
  for (let i = 0; i < n; i++) {
    buf[3 * i] = (d.x[i] - b.cx) * b.s; buf[3 * i + 1] = (d.y[i] - b.cy) * b.s; buf[3 * i + 2] = d.label[i];
  }
  map.unit = buf; map.n = n;
  buildGrid(buf, n);
  if (!map.gl) return;
  const gl = map.gl, vao = gl.createVertexArray();
  gl.bindVertexArray(vao);
  gl.bindBuffer(gl.ARRAY_BUFFER, gl.createBuffer());
  gl.bufferData(gl.ARRAY_BUFFER, buf, gl.STATIC_DRAW);
  const pos = gl.getAttribLocation(map.prog, "pos"), lab = gl.getAttribLocation(map.prog, "lab");
  gl.enableVertexAttribArray(pos); gl.vertexAttribPointer(pos, 2, gl.FLOAT, false, 12, 0);
  gl.enableVertexAttribArray(lab); gl.vertexAttribPointer(lab, 1, gl.FLOAT, false, 12, 8);
  map.vao = vao;
}

function draw() {
  if (state.pending) return;
  state.pending = requestAnimationFrame(() => { state.pending = 0; render(); });
}

function render() {
  const t0 = performance.now(), canvas = $("gl"), over = $("overlay");
  const w = canvas.clientWidth, h = canvas.clientHeight, dpr = window.devicePixelRatio || 1;
  for (const c of [canvas, over]) { c.width = w * dpr; c.height = h * dpr; }
  const v = state.view, aspect = w / h, sx = v.k / Math.max(aspect, 1), sy = v.k * Math.min(aspect, 1);
  state.transform = { sx, sy, ox: v.x, oy: v.y };
  if (map.gl && map.n) {
    const gl = map.gl;
    gl.viewport(0, 0, canvas.width, canvas.height);
    gl.clearColor(0.063, 0.078, 0.094, 1); gl.clear(gl.COLOR_BUFFER_BIT);
    gl.enable(gl.BLEND); gl.blendFunc(gl.SRC_ALPHA, gl.ONE_MINUS_SRC_ALPHA);
    gl.useProgram(map.prog); gl.bindVertexArray(map.vao);
    gl.uniform2f(gl.getUniformLocation(map.prog, "scale"), sx, sy);
    gl.uniform2f(gl.getUniformLocation(map.prog, "offset"), v.x, v.y);
    gl.uniform1f(gl.getUniformLocation(map.prog, "selected"), state.selectedIndex ?? -1);
    gl.uniform1f(gl.getUniformLocation(map.prog, "size"), Math.max(2, Math.min(9, 3.5 * Math.sqrt(v.k))) * dpr);
    gl.drawArrays(gl.POINTS, 0, map.n);
    gl.finish();
    state.pointsDrawn = map.n;
  }
  drawNames(over, w, h, dpr);
  state.frames.push(performance.now() - t0);
  state.stamps.push(t0);
  if (state.frames.length > 600) { state.frames.shift(); state.stamps.shift(); }
}

function drawNames(over, w, h, dpr) {
  const ctx = over.getContext("2d"), t = state.transform, b = map.bounds, d = state.data;
  ctx.clearRect(0, 0, over.width, over.height);
  if (!d || !b) return;
  ctx.scale(dpr, dpr);
  drawLasso(ctx, w, h);
  ctx.font = "12px system-ui, sans-serif"; ctx.textAlign = "center";
  const shown = Math.min(d.labels.length, Math.round(25 * Math.sqrt(state.view.k)));
  for (const [i, l] of d.labels.slice(0, shown).entries()) {
    const px = (((l.x - b.cx) * b.s * t.sx + t.ox) + 1) / 2 * w, py = (1 - (((l.y - b.cy) * b.s * t.sy + t.oy) + 1) / 2) * h;
    if (px < 0 || px > w || py < 0 || py > h) continue;
    ctx.fillStyle = "#000a"; ctx.fillText(l.name, px + 1, py + 1);
    ctx.fillStyle = state.selectedIndex === i ? "#fff" : "#e8edf2"; ctx.fillText(l.name, px, py);
  }
}

// -- lasso -------------------------------------------------------------------------------
function toUnit(p) {
  const t = state.transform;
  return [(p[0] - t.ox) / t.sx, (p[1] - t.oy) / t.sy];
}

function inside(poly, x, y) {
  let hit = false;
  for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
    const [xi, yi] = poly[i], [xj, yj] = poly[j];
    if ((yi > y) !== (yj > y) && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) hit = !hit;
  }
  return hit;
}

/** LLM-labelled items inside a lasso drawn in clip coordinates, of the selected label
 * when one is selected (a split moves LLM members; the hits that matched them follow). */
function lassoItems(path) {
  if (!state.transform || path.length < 3 || !map.n) return [];
  const d = state.data, poly = path.map(toUnit), out = [], sel = state.selectedIndex ?? -1;
  const asked = new Set(["llm", "cluster"].map((s) => d.sources.indexOf(s)).filter((x) => x >= 0));
  for (let i = 0; i < map.n; i++) {
    if ((sel >= 0 && d.label[i] !== sel) || !asked.has(d.source[i])) continue;
    if (inside(poly, map.unit[3 * i], map.unit[3 * i + 1])) out.push(i);
  }
  return out;
}

function finishLasso(path) {
  state.lasso = lassoItems(path);
  const of = state.selected == null ? "" : ` of ${state.data.labels[state.selectedIndex].name}`;
  say(state.lasso.length ? `lasso: ${state.lasso.length} item(s)${of}; split moves them to a new label` : "");
}

function drawLasso(ctx, w, h) {
  const t = state.transform, toPx = (u) => [((u[0] * t.sx + t.ox) + 1) / 2 * w, (1 - ((u[1] * t.sy + t.oy) + 1) / 2) * h];
  const path = state.lassoPath;
  if (path && path.length > 1) {
    ctx.strokeStyle = "#ffd166"; ctx.lineWidth = 1.5; ctx.beginPath();
    path.forEach((p, n) => { const x = (p[0] + 1) / 2 * w, y = (1 - (p[1] + 1) / 2) * h; n ? ctx.lineTo(x, y) : ctx.moveTo(x, y); });
    ctx.stroke();
  }
  ctx.strokeStyle = "#ffd166"; ctx.lineWidth = 1;
  for (const i of (state.lasso || []).slice(0, 5000)) {
    const [x, y] = toPx([map.unit[3 * i], map.unit[3 * i + 1]]);
    ctx.beginPath(); ctx.arc(x, y, 4, 0, 2 * Math.PI); ctx.stroke();
  }
}

function buildGrid(buf, n) {
  const cells = 128, grid = new Map();
  for (let i = 0; i < n; i++) {
    const key = Math.floor((buf[3 * i] + 1) / 2 * cells) * cells + Math.floor((buf[3 * i + 1] + 1) / 2 * cells);
    (grid.get(key) || grid.set(key, []).get(key)).push(i);
  }
  state.grid = { cells, grid };
}

let hoverTimer = 0;
function hover(e, p) {
  if (!state.grid || !state.transform) return;
  const t = state.transform, ux = (p[0] - t.ox) / t.sx, uy = (p[1] - t.oy) / t.sy;
  const { cells, grid } = state.grid, cx = Math.floor((ux + 1) / 2 * cells), cy = Math.floor((uy + 1) / 2 * cells);
  let best = -1, bestD = (6 / $("gl").clientWidth * 2 / t.sx) ** 2;
  for (let a = cx - 1; a <= cx + 1; a++) for (let b = cy - 1; b <= cy + 1; b++) {
    for (const i of grid.get(a * cells + b) || []) {
      const dx = map.unit[3 * i] - ux, dy = map.unit[3 * i + 1] - uy, dd = dx * dx + dy * dy;
      if (dd < bestD) { bestD = dd; best = i; }
    }
  }
  const tip = $("tooltip");
  if (best < 0) { tip.hidden = true; return; }
  const d = state.data, label = d.labels[d.label[best]];
  tip.style.left = e.offsetX + 12 + "px"; tip.style.top = e.offsetY + 12 + "px"; tip.hidden = false;
  tip.textContent = `${label.name} · ${d.sources[d.source[best]]}`;
  clearTimeout(hoverTimer);
  if (state.readOnly) { if (d.texts) tip.textContent = `${d.texts[best]} — ${tip.textContent}`; return; }
  hoverTimer = setTimeout(async () => {
    try {
      const item = await api(`/ui/api/items/${d.ids[best]}`);
      const sim = item.similarity == null ? "" : ` · similarity ${item.similarity.toFixed(3)}`;
      tip.textContent = `${item.text} — ${item.label} · ${item.source}${sim}`;
    } catch (err) { /* the tooltip keeps the label */ }
  }, 80);
}

// -- labels panel ------------------------------------------------------------------------
function renderLabels(order) {
  const d = state.data, ol = $("labels");
  ol.textContent = "";
  const ids = order || d.labels.map((l) => l.id);
  for (const id of ids) {
    const i = d.labels.findIndex((l) => l.id === id);
    if (i < 0) continue;
    const l = d.labels[i], li = document.createElement("li");
    li.dataset.id = l.id;
    if (state.selected === l.id) li.classList.add("selected");
    const box = document.createElement("input");
    box.type = "checkbox"; box.checked = state.checked.includes(l.id); box.disabled = state.readOnly;
    box.addEventListener("click", (e) => {
      e.stopPropagation();
      state.checked = box.checked ? [...state.checked, l.id] : state.checked.filter((x) => x !== l.id);
    });
    const sw = document.createElement("span"); sw.className = "swatch";
    sw.style.background = `hsl(${hue(i) * 360} 70% 60%)`;
    const name = document.createElement("span"); name.className = "name"; name.textContent = l.name;
    const count = document.createElement("span"); count.className = "count"; count.textContent = l.count;
    li.append(box, sw, name, count);
    li.addEventListener("click", () => select(l.id));
    ol.append(li);
  }
}

async function select(id) {
  const d = state.data, i = d.labels.findIndex((l) => l.id === id);
  state.selected = id; state.selectedIndex = i < 0 ? null : i;
  renderLabels(state.order); draw();
  const l = d.labels[i];
  $("detail").hidden = false; $("detail-name").textContent = l.name;
  $("detail-meta").textContent = `${l.count} items · id ${l.id}` + (l.category ? ` · category ${l.category}` : "") +
    (l.spread != null ? ` · spread ${l.spread}` : "") + (l.moved ? ` · ${l.moved} moved by consensus` : "");
  const members = $("members"), history = $("history");
  members.textContent = ""; history.textContent = ""; $("aliases").textContent = ""; state.lasso = [];
  if (state.readOnly) {
    for (const m of (d.members && d.members[l.id]) || []) addMember(m);
    return;
  }
  try {
    const [rows, detail] = await Promise.all([api(`/ui/api/labels/${id}/members`), api(`/v1/labels/${id}`)]);
    for (const m of rows.members) addMember(m);
    renderAliases(detail.aliases || []);
    for (const h of detail.history || []) {
      const li = document.createElement("li");
      li.textContent = `${h.kind}: ${h.raw_label || ""} ${h.from ?? ""} → ${h.into}${h.undone ? " (undone)" : ""}`;
      history.append(li);
    }
  } catch (err) { say(err.message); }
}

function renderAliases(aliases) {
  const box = $("aliases"); box.textContent = "";
  for (const a of aliases) {
    const label = document.createElement("label");
    if (!state.readOnly) {
      const c = document.createElement("input");
      c.type = "checkbox"; c.dataset.alias = a; c.title = "split the checked raw labels (and their items) into a new label";
      label.append(c);
    }
    label.append(" " + a); box.append(label);
  }
}

function addMember(m) {
  const li = document.createElement("li"), src = document.createElement("span");
  if (!state.readOnly) {
    const box = document.createElement("input");
    box.type = "checkbox"; box.dataset.item = m.id; box.title = "split checked members into a new label";
    li.append(box);
  }
  li.append(m.text + " ");
  src.className = "src"; src.textContent = `${m.source}${m.raw_label ? " · " + m.raw_label : ""}`;
  li.append(src);
  if (m.moved_from) {  // the LLM answered another label; the consensus moved the item here
    const mark = document.createElement("span"); mark.className = "moved";
    mark.textContent = ` · moved from ${m.moved_from} (support ${m.support})`;
    mark.title = "the evidence of similar items contradicted the LLM's answer"; li.append(mark);
    li.classList.add("consensus");
  }
  $("members").append(li);
}

async function search(e) {
  e.preventDefault();
  const q = $("query").value.trim();
  if (!q) { state.order = null; renderLabels(); return; }
  if (state.readOnly) {
    state.order = state.data.labels.filter((l) => l.name.includes(q.toLowerCase())).map((l) => l.id);
  } else {
    try { state.order = (await api(`/ui/api/search?q=${encodeURIComponent(q)}&mode=${$("mode").value}`)).labels; }
    catch (err) { say(err.message); return; }
  }
  renderLabels(state.order);
}

// -- curation ----------------------------------------------------------------------------
async function curate(fn) {
  if (state.readOnly) { say("this is a static export: curation needs a running canonlabel"); return; }
  try { const out = await fn(); say(out); await refresh(); }
  catch (err) { say(err.message); }
}

function wireActions() {
  $("merge").addEventListener("click", () => curate(async () => {
    const [into, ...rest] = state.checked;
    if (!into || !rest.length) throw new Error("check two or more labels: the first one checked keeps its name");
    for (const from of rest) await api("/v1/labels/merge", { method: "POST", body: { from, into }, admin: true });
    state.checked = []; return `merged ${rest.length} label(s) into ${into}`;
  }));
  $("rename").addEventListener("click", () => curate(async () => {
    if (state.selected == null) throw new Error("select a label first");
    const name = prompt("new name (snake_case)"); if (!name) return "";
    await api(`/v1/labels/${state.selected}/rename`, { method: "POST", body: { name }, admin: true });
    return `renamed to ${name}`;
  }));
  $("split").addEventListener("click", () => curate(async () => {
    if (state.selected == null) throw new Error("select a label first");
    const aliases = [...document.querySelectorAll("#aliases input:checked")].map((b) => b.dataset.alias);
    let items = [...document.querySelectorAll("#members input:checked")].map((b) => Number(b.dataset.item));
    if (!items.length && state.lasso && state.lasso.length) items = state.lasso.map((i) => state.data.ids[i]);
    const body = aliases.length ? { aliases } : items.length ? { items } : { k: 2 };
    await api(`/v1/labels/${state.selected}/split`, { method: "POST", body, admin: true });
    state.lasso = [];
    if (aliases.length) return `moved ${aliases.length} raw label(s) to a new label`;
    return items.length ? `moved ${items.length} member(s) to a new label` : "split in two";
  }));
  $("undo").addEventListener("click", () => curate(async () => {
    await api("/v1/labels/undo", { method: "POST", admin: true }); return "undone";
  }));
  $("search").addEventListener("submit", search);
}

// -- curves ------------------------------------------------------------------------------
function renderCurves(c) {
  // One canvas per series, sized to its box in device pixels: text is never stretched
  // and a curve is drawn whatever the number of windows (one window: a level line).
  const box = $("charts"); box.textContent = "";
  const series = [["hit rate", c.hit_rate], ["LLM calls per 1,000 items", c.llm_per_1000],
    ["router share", c.router_share], ["labels created", c.labels]];
  for (const [title, ys] of series) {
    if (!ys || !ys.length) continue;
    const canvas = document.createElement("canvas");
    canvas.className = "chart"; canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", `${title}: ${ys[ys.length - 1]}`);
    box.append(canvas);
    drawChart(canvas, title, ys, c.end || []);
  }
  const r = c.router;
  if (r && r.error != null) {
    const k = r.cache || {};
    box.insertAdjacentHTML("beforeend", `<p>router: estimated error ${r.error} (95% upper ${r.upper_95}) over ${r.audits} audits; cache: ${k.error ?? "n/a"} (95% upper ${k.upper_95 ?? "n/a"})</p>`);
  }
}

function drawChart(canvas, title, ys, ends) {
  const ratio = window.devicePixelRatio || 1, w = canvas.clientWidth || 260, h = canvas.clientHeight || 70;
  canvas.width = Math.round(w * ratio); canvas.height = Math.round(h * ratio);
  const g = canvas.getContext("2d"); g.scale(ratio, ratio);
  const top_ = Math.max(...ys), max = Math.max(top_, 1e-9), n = ys.length, top = 4, bottom = h - 16, left = 2, right = w - 2;
  const x = (i) => (n === 1 ? left : left + (i / (n - 1)) * (right - left));
  const y = (v) => bottom - (v / max) * (bottom - top);
  g.strokeStyle = "#d5dbe1"; g.lineWidth = 1;
  g.beginPath(); g.moveTo(left, bottom + 0.5); g.lineTo(right, bottom + 0.5); g.stroke();
  g.strokeStyle = "#3b7dd8"; g.lineWidth = 1.5; g.beginPath();
  ys.forEach((v, i) => (i ? g.lineTo(x(i), y(v)) : g.moveTo(x(i), y(v))));
  if (n === 1) g.lineTo(right, y(ys[0]));
  g.stroke();
  g.fillStyle = "#5b6670"; g.font = "11px system-ui, sans-serif"; g.textBaseline = "bottom";
  const items = ends.length ? ` · ${ends[ends.length - 1].toLocaleString()} items` : "";
  g.fillText(`${title}: ${ys[n - 1]} (max ${top_})${items}`, left, h - 1);
}

// -- hierarchy ---------------------------------------------------------------------------
function ancestors(nodes) {  // label id -> its parents, top level first
  const up = {};
  const walk = (node, path) => {
    if (node.level) for (const c of node.children) walk(c, [...path, node]);
    else up[node.id] = path;
  };
  for (const n of nodes) walk(n, []);
  return up;
}

function renderTree(nodes) {
  state.tree = nodes; state.up = ancestors(nodes);
  const box = $("tree-nodes"), sel = $("colour-by");
  box.textContent = ""; $("tree").hidden = !nodes.length;
  sel.length = 1;
  const top = Math.max(0, ...nodes.map((n) => n.level));
  for (let l = top; l >= 1; l--) sel.add(new Option(`colour: level ${l} parents`, String(l)));
  if (state.colourLevel > top) state.colourLevel = 0;
  sel.value = String(state.colourLevel || 0);
  const add = (into, node) => {
    if (node.level) {  // a parent: click to see its children
      const d = document.createElement("details"), s = document.createElement("summary");
      d.dataset.id = node.id; s.textContent = `${node.name} (${node.count})`;
      d.append(s); for (const c of node.children) add(d, c); into.append(d);
    } else {
      const leaf = document.createElement("div");
      leaf.className = "leaf"; leaf.dataset.id = node.id; leaf.textContent = `${node.name} (${node.count})`;
      leaf.addEventListener("click", () => select(node.id)); into.append(leaf);
    }
  };
  for (const n of nodes) add(box, n);
}

function colourBy(level) {  // 0: by label; else by each point's parent at that level
  state.colourLevel = level;
  const d = state.data;
  if (!d) return;
  if (!level) { loadPoints(d); draw(); return; }
  const index = {};
  let next = 0;
  const label = d.label.map((i) => {
    const node = (state.up[d.labels[i].id] || []).find((p) => p.level === level);
    if (!node) return 100000 + i;  // a label outside the tree keeps a colour of its own
    if (!(node.id in index)) index[node.id] = next++;
    return index[node.id];
  });
  state.selectedIndex = null;  // selection highlights a label, not a parent
  loadPoints({ ...d, label }); draw();
}

// -- load --------------------------------------------------------------------------------
async function refresh() {
  const t0 = performance.now();
  const d = state.readOnly ? window.__CANONLABEL_DATA__.points : await api("/ui/api/points");
  state.data = d; loadPoints(d);
  renderLabels(state.order);
  if (state.selected != null) {
    const keep = d.labels.findIndex((l) => l.id === state.selected);
    if (keep >= 0) await select(state.selected); else { state.selected = null; state.selectedIndex = null; $("detail").hidden = true; }
  }
  render();
  state.firstPaintMs = state.firstPaintMs ?? performance.now() - t0;
  $("status").textContent = `${d.x.length.toLocaleString()} items · ${d.labels.length} labels`;
  const c = state.readOnly ? window.__CANONLABEL_DATA__.curves : await api("/ui/api/curves");
  renderCurves(c);
  const tree = state.readOnly ? window.__CANONLABEL_DATA__.hierarchy || []
    : (await api("/v1/hierarchy").catch(() => ({ parents: [] }))).parents;
  renderTree(tree);
  if (state.colourLevel) colourBy(state.colourLevel);
  state.ready = true;
}

function start() {
  for (const k of ["api-token", "admin-token"]) {
    $(k).value = sessionStorage.getItem(k) || "";
    $(k).addEventListener("change", () => { sessionStorage.setItem(k, $(k).value); refresh().catch((e) => say(e.message)); });
  }
  setupMap(); wireActions();
  $("colour-by").addEventListener("change", () => colourBy(Number($("colour-by").value)));
  refresh().catch((err) => { say(err.message); $("status").textContent = "could not load: " + err.message; });
}

start();
