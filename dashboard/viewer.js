// The layout viewer's browser side (dashboard/viewer.py): shows the server's datashaded image of a view, zooms (wheel,
// zoom box) and pans (drag) it at once by moving the image, then asks the server for the new view at full resolution;
// asks which cell is under a resting pointer and shows its tooltip; sends box and lasso selections.
// Views are [x0, x1, y0, y1] in data units; the server echoes the `seq` of the last view it drew. Marks (data.marks:
// groups of cells drawn as crosses or rings over the image, e.g. a search's query and neighbours) follow the view.

const STATE = new WeakMap();
const MODES = [["pan", "Pan", "Drag to pan; the wheel zooms"],
               ["zoom", "Zoom box", "Drag a box to zoom into it"],
               ["box", "Box select", "Drag a box to select cells"],
               ["lasso", "Lasso", "Draw around cells to select them"]];
const WHEEL_SETTLE_MS = 100;  // a wheel gesture has ended when no wheel event came for this long
const HOVER_REST_MS = 40;  // the pointer rests this long before the cell under it is asked for
const HOVER_RADIUS_PX = 8;
const MARK_PX = {cross: 4, ring: 6};  // half the size of a mark's symbol
const MARK_SYMBOL = {cross: "\u00d7", ring: "\u25cb"};  // the legend's symbol of each kind of mark

function element(tag, className, parent) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (parent) parent.appendChild(node);
  return node;
}

function setup(root) {
  const s = {root, mode: "pan", seq: 0, requested: 0, hoverSeq: 0, images: 0, src: null, shown: null, target: null,
             drag: null, wheelTimer: null, hoverTimer: null, pointer: null, selection: null, send: null};
  root.innerHTML = "";
  s.title = element("div", "scv-title", root);
  const body = element("div", "scv-body", root);
  const figure = element("div", "scv-figure", body);
  const bar = element("div", "scv-toolbar", figure);
  s.buttons = MODES.map(([mode, label, help]) => {
    const button = element("button", "scv-button", bar);
    button.textContent = label;
    button.title = help;
    button.dataset.mode = mode;
    button.onclick = () => { s.mode = mode; paintToolbar(s); };
    return button;
  });
  const reset = element("button", "scv-button", bar);
  reset.textContent = "Reset";
  reset.title = "Show every cell again (or double-click the plot)";
  reset.onclick = () => requestView(s, null);
  const clear = element("button", "scv-button", bar);
  clear.textContent = "Clear selection";
  clear.onclick = () => s.send("selection", {});
  s.frame = element("div", "scv-frame", figure);
  s.image = element("img", "scv-image", s.frame);
  s.image.draggable = false;
  s.image.alt = "";
  s.overlay = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  s.overlay.setAttribute("class", "scv-overlay");
  s.frame.appendChild(s.overlay);
  s.tip = element("div", "scv-tip", s.frame);
  s.tip.hidden = true;
  s.legend = element("div", "scv-legend", body);
  listen(s);
  paintToolbar(s);
  return s;
}

function paintToolbar(s) {
  for (const button of s.buttons) button.classList.toggle("scv-active", button.dataset.mode === s.mode);
  s.frame.dataset.mode = s.mode;
}

function box(s) { return s.frame.getBoundingClientRect(); }

function toData(view, px, py, rect) {
  return [view[0] + (px / rect.width) * (view[1] - view[0]), view[3] - (py / rect.height) * (view[3] - view[2])];
}

function toPixels(view, x, y, rect) {
  return [((x - view[0]) / (view[1] - view[0])) * rect.width, ((view[3] - y) / (view[3] - view[2])) * rect.height];
}

function pending(s) { return s.requested > s.seq; }

// Move the shown image so that it sits where the target view puts it (instant feedback before the new render).
function preview(s) {
  const sv = s.shown, tv = s.target;
  if (!sv || !tv) return;
  const rect = box(s);
  const scale = (sv[1] - sv[0]) / (tv[1] - tv[0]);
  const dx = ((sv[0] - tv[0]) / (tv[1] - tv[0])) * rect.width;
  const dy = ((tv[3] - sv[3]) / (tv[3] - tv[2])) * rect.height;
  s.image.style.transform = `translate(${dx}px, ${dy}px) scale(${scale})`;
  drawOverlay(s);
}

function requestView(s, view) {
  s.requested = Math.max(s.requested, s.seq) + 1;
  s.root.dataset.requested = String(s.requested);
  s.send("view", view ? {x: [view[0], view[1]], y: [view[2], view[3]], seq: s.requested}
                      : {reset: true, seq: s.requested});
}

function zoomAbout(view, x, y, factor) {
  return [x - (x - view[0]) * factor, x + (view[1] - x) * factor,
          y - (y - view[2]) * factor, y + (view[3] - y) * factor];
}

function local(s, event) {
  const rect = box(s);
  return [event.clientX - rect.left, event.clientY - rect.top, rect];
}

function listen(s) {
  const frame = s.frame;
  frame.addEventListener("wheel", (event) => {
    if (!s.target) return;
    event.preventDefault();
    const [px, py, rect] = local(s, event);
    const [x, y] = toData(s.target, px, py, rect);
    s.target = zoomAbout(s.target, x, y, Math.exp(Math.max(-1, Math.min(1, event.deltaY * 0.002))));
    preview(s);
    clearTimeout(s.hoverTimer);  // a hover question now would hold up the new view
    hideTip(s);
    clearTimeout(s.wheelTimer);
    s.wheelTimer = setTimeout(() => requestView(s, s.target), WHEEL_SETTLE_MS);
  }, {passive: false});
  frame.addEventListener("pointerdown", (event) => {
    if (!s.target || event.button !== 0) return;
    frame.setPointerCapture(event.pointerId);
    const [px, py] = local(s, event);
    s.drag = {start: [px, py], view: s.target.slice(), path: [[px, py]], moved: false};
    hideTip(s);
  });
  frame.addEventListener("pointermove", (event) => {
    const [px, py, rect] = local(s, event);
    s.pointer = [px, py];
    if (!s.drag) {
      scheduleHover(s, px, py, rect);
      return;
    }
    const d = s.drag;
    d.moved = d.moved || Math.abs(px - d.start[0]) + Math.abs(py - d.start[1]) > 3;
    if (s.mode === "pan") {
      const [x0, y0] = toData(d.view, d.start[0], d.start[1], rect);
      const [x1, y1] = toData(d.view, px, py, rect);
      s.target = [d.view[0] - (x1 - x0), d.view[1] - (x1 - x0), d.view[2] - (y1 - y0), d.view[3] - (y1 - y0)];
      preview(s);
    } else {
      d.path.push([px, py]);
      drawGesture(s);
    }
  });
  frame.addEventListener("pointerup", (event) => finishDrag(s, event));
  frame.addEventListener("pointercancel", () => { s.drag = null; drawOverlay(s); });
  frame.addEventListener("pointerleave", () => { clearTimeout(s.hoverTimer); s.pointer = null; hideTip(s); });
  frame.addEventListener("dblclick", () => requestView(s, null));
}

function finishDrag(s, event) {
  const d = s.drag;
  s.drag = null;
  if (!d || !d.moved) { drawOverlay(s); return; }
  const [px, py, rect] = local(s, event);
  const [xa, ya] = toData(d.view, d.start[0], d.start[1], rect);
  const [xb, yb] = toData(d.view, px, py, rect);
  if (s.mode === "pan") {
    requestView(s, s.target);
  } else if (s.mode === "zoom") {
    const w = Math.abs(xb - xa), h = Math.abs(yb - ya);
    if (w > 0 && h > 0) {  // widened to the frame's aspect ratio about the box's centre
      const aspect = (d.view[1] - d.view[0]) / (d.view[3] - d.view[2]);
      const cx = (xa + xb) / 2, cy = (ya + yb) / 2;
      const half = w / h > aspect ? [w / 2, w / 2 / aspect] : [(h / 2) * aspect, h / 2];
      s.target = [cx - half[0], cx + half[0], cy - half[1], cy + half[1]];
      preview(s);
      requestView(s, s.target);
    }
  } else if (s.mode === "box") {
    s.selection = {box: [{x: [Math.min(xa, xb), Math.max(xa, xb)], y: [Math.min(ya, yb), Math.max(ya, yb)]}]};
    s.send("selection", s.selection);
  } else if (d.path.length >= 3) {
    const points = d.path.map(([x, y]) => toData(d.view, x, y, rect));
    s.selection = {lasso: [{x: points.map((p) => p[0]), y: points.map((p) => p[1])}]};
    s.send("selection", s.selection);
  }
  drawOverlay(s);
}

function scheduleHover(s, px, py, rect) {
  clearTimeout(s.hoverTimer);
  if (!s.tip.hidden && Math.hypot(px - s.tipAt[0], py - s.tipAt[1]) > HOVER_RADIUS_PX) hideTip(s);
  s.hoverTimer = setTimeout(() => {
    if (!s.target || s.drag || pending(s)) return;  // after the new view is drawn
    const view = s.target;
    const [x, y] = toData(view, px, py, rect);
    s.hoverSeq += 1;
    s.root.dataset.hoverAsked = String(s.hoverSeq);
    s.send("hover", {x, y, r: (HOVER_RADIUS_PX / rect.width) * (view[1] - view[0]), seq: s.hoverSeq});
  }, HOVER_REST_MS);
}

function hideTip(s) { s.tip.hidden = true; }

function showHover(s, hover) {
  if (!hover || hover.seq !== s.hoverSeq || s.root.dataset.hoverShown === String(hover.seq)) return;
  s.root.dataset.hoverShown = String(hover.seq);
  if (!s.pointer || !hover.lines || !s.target) { hideTip(s); return; }
  const rect = box(s);
  const [px, py] = toPixels(s.target, hover.x, hover.y, rect);
  s.tip.replaceChildren(...hover.lines.map((line, i) => {
    const row = document.createElement("div");
    row.textContent = line;
    if (i === 0) row.className = "scv-tip-id";
    return row;
  }));
  s.tip.hidden = false;
  s.tipAt = [px, py];
  const left = px + 12 + s.tip.offsetWidth > rect.width ? px - 12 - s.tip.offsetWidth : px + 12;
  const top = Math.min(Math.max(py - s.tip.offsetHeight / 2, 0), Math.max(rect.height - s.tip.offsetHeight, 0));
  s.tip.style.left = `${Math.max(left, 0)}px`;
  s.tip.style.top = `${top}px`;
  s.tip.dataset.cell = hover.lines[0];
}

function svgNode(tag, attributes, parent) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  parent.appendChild(node);
  return node;
}

function drawGesture(s) {
  drawOverlay(s);
  const d = s.drag;
  const style = {fill: "rgba(0,114,178,0.08)", stroke: "#0072B2", "stroke-width": 1.5, "stroke-dasharray": "4 3"};
  if (s.mode === "lasso") {
    svgNode("polyline", {...style, points: d.path.map((p) => p.join(",")).join(" ")}, s.overlay);
  } else {
    const [x0, y0] = d.start, [x1, y1] = d.path[d.path.length - 1];
    svgNode("rect", {...style, x: Math.min(x0, x1), y: Math.min(y0, y1), width: Math.abs(x1 - x0),
                     height: Math.abs(y1 - y0)}, s.overlay);
  }
}

// One SVG path per group of marks: a cross or a ring around each of its cells.
function markPath(shape, points) {
  const r = MARK_PX[shape];
  if (shape === "cross") {
    return points.map(([x, y]) => `M${x - r},${y - r}L${x + r},${y + r}M${x - r},${y + r}L${x + r},${y - r}`).join("");
  }
  return points.map(([x, y]) => `M${x + r},${y}A${r},${r} 0 1 0 ${x - r},${y}A${r},${r} 0 1 0 ${x + r},${y}`).join("");
}

// The marked cells, then the selection, over the image at the target view.
function drawOverlay(s) {
  s.overlay.replaceChildren();
  const selection = s.selection || {};
  if (!s.target) return;
  const rect = box(s);
  for (const group of s.marks || []) {
    const points = group.x.map((x, i) => toPixels(s.target, x, group.y[i], rect));
    svgNode("path", {d: markPath(group.shape, points), fill: "none", stroke: group.color, "stroke-width": 2,
                     class: "scv-mark"}, s.overlay);
  }
  const style = {fill: "none", stroke: "#333", "stroke-width": 1.5, "stroke-dasharray": "5 3"};
  for (const b of selection.box || []) {
    const [x0, y0] = toPixels(s.target, b.x[0], b.y[1], rect), [x1, y1] = toPixels(s.target, b.x[1], b.y[0], rect);
    svgNode("rect", {...style, x: x0, y: y0, width: x1 - x0, height: y1 - y0}, s.overlay);
  }
  for (const l of selection.lasso || []) {
    const points = l.x.map((x, i) => toPixels(s.target, x, l.y[i], rect).join(",")).join(" ");
    svgNode("polygon", {...style, points}, s.overlay);
  }
}

function paintLegend(s, data) {
  s.legend.replaceChildren();
  s.legend.className = data.legend_below ? "scv-legend scv-below" : "scv-legend";
  for (const group of data.marks || []) {
    const row = element("div", "scv-entry", s.legend);
    const symbol = element("span", "scv-mark-symbol", row);
    symbol.textContent = MARK_SYMBOL[group.shape];
    symbol.style.color = group.color;
    element("span", "", row).textContent = group.label;
  }
  for (const entry of data.legend || []) {
    const row = element("div", "scv-entry", s.legend);
    element("span", "scv-swatch", row).style.background = entry.color;
    element("span", "", row).textContent = entry.label;
  }
  if (data.colorbar) {
    const bar = data.colorbar;
    element("div", "scv-bar-title", s.legend).textContent = bar.title;
    const scale = element("div", "scv-bar", s.legend);
    scale.style.background = `linear-gradient(to top, ${bar.colors.join(", ")})`;
    const labels = element("div", "scv-bar-labels", s.legend);
    element("span", "", labels).textContent = bar.high;
    element("span", "", labels).textContent = bar.low;
  }
}

function showImage(s, data) {
  const src = data.image;
  s.latestSrc = src;
  const next = new Image();
  next.className = "scv-image";
  next.draggable = false;
  next.alt = data.title;
  next.src = src;
  const swap = () => {
    if (s.latestSrc !== src) return;  // a newer image came meanwhile
    s.image.replaceWith(next);
    s.image = next;
    s.src = src;
    s.shown = data.view;
    if (!pending(s) && !s.drag) s.target = data.view.slice();
    s.images += 1;
    s.root.dataset.images = String(s.images);
    s.root.dataset.shown = String(data.seq);
    s.root.dataset.shownTitle = data.title;
    s.image.style.transform = "";
    preview(s);
  };
  next.decode().then(swap, swap);
}

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  const root = parentElement.querySelector(".scv-root");
  let s = STATE.get(root);
  if (!s) {
    s = setup(root);
    s.seq = s.requested = data.seq || 0;
    STATE.set(root, s);
  }
  s.send = setTriggerValue;
  s.seq = Math.max(s.seq, data.seq || 0);
  s.frame.style.aspectRatio = `${data.size[0]} / ${data.size[1]}`;
  s.title.textContent = data.title;
  s.selection = data.selection;
  s.marks = data.marks;
  paintLegend(s, data);
  if (data.image !== s.src && data.image !== s.latestSrc) {
    showImage(s, data);
  } else if (data.image === s.src) {
    s.root.dataset.shownTitle = data.title;  // e.g. another annotation that splits the cells the same way
    if (!pending(s) && !s.drag && s.shown) {
      s.target = s.shown.slice();
      s.image.style.transform = "";
      s.root.dataset.shown = String(data.seq);
    }
  }
  drawOverlay(s);
  showHover(s, data.hover);
}
