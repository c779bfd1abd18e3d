// Image panel: the radiograph as the service rendered it (/render), anatomy masks (/segment)
// and explanation maps (/explain/*) as layers of one stage. Zoom and pan transform the stage,
// so every layer stays aligned with the radiograph whatever size the server sent it at.

// Same colours as the service's own overlay (inference/render.py).
export const STRUCTURES = [
  { name: "right_lung", colour: [0, 200, 255] },
  { name: "left_lung", colour: [0, 255, 120] },
  { name: "heart_mediastinum", colour: [255, 60, 60] },
  { name: "spine", colour: [255, 220, 0] },
  { name: "abdomen", colour: [200, 120, 255] },
];
const OVERLAY_MAX_SIDE = 1024; // overlays are smooth: a capped canvas keeps big uploads fast
const MIN_ZOOM = 1;
const MAX_ZOOM = 8;

// The 'jet' colour map of explain/render.py (piecewise linear), 256 entries of [r, g, b].
function jetLut() {
  const clip = (v) => Math.min(1, Math.max(0, v));
  return Array.from({ length: 256 }, (_, i) => {
    const x = i / 255;
    return [1.5 - Math.abs(4 * x - 3), 1.5 - Math.abs(4 * x - 2), 1.5 - Math.abs(4 * x - 1)].map(
      (c) => Math.round(clip(c) * 255),
    );
  });
}
const JET = jetLut();

async function pixelsOf(blob) {
  const bitmap = await createImageBitmap(blob);
  const scale = Math.min(1, OVERLAY_MAX_SIDE / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = Math.max(1, Math.round(bitmap.height * scale));
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  return { canvas, ctx, image: ctx.getImageData(0, 0, canvas.width, canvas.height) };
}

// A mask PNG (0 outside; 1 or 255 inside) as a coloured layer: predicted structures filled,
// derived ones outlined only, so they never read as model output.
async function maskLayer(blob, colour, derived) {
  const { canvas, ctx, image } = await pixelsOf(blob);
  const { width, height, data } = image;
  let peak = 0;
  for (let i = 0; i < data.length; i += 4) peak = Math.max(peak, data[i]);
  const cut = peak / 2;
  const inside = new Uint8Array(width * height);
  for (let p = 0; p < inside.length; p += 1) inside[p] = peak > 0 && data[p * 4] > cut ? 1 : 0;
  const line = Math.max(2, Math.round(Math.max(width, height) / 256));
  const at = (x, y) => (x < 0 || y < 0 || x >= width || y >= height ? 0 : inside[y * width + x]);
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1) {
      const p = y * width + x;
      const o = p * 4;
      let alpha = 0;
      if (inside[p]) {
        const edge = !at(x - line, y) || !at(x + line, y) || !at(x, y - line) || !at(x, y + line);
        alpha = edge ? 255 : derived ? 0 : 90;
      }
      data[o] = colour[0];
      data[o + 1] = colour[1];
      data[o + 2] = colour[2];
      data[o + 3] = alpha;
    }
  }
  ctx.putImageData(image, 0, 0);
  canvas.className = "layer";
  return canvas;
}

// A grayscale heat map PNG (0-255 = 0-1) coloured with jet; opacity grows with heat and cold
// areas stay transparent, as in the service's own overlay.
async function heatLayer(blob, target) {
  const { image } = await pixelsOf(blob);
  const { width, height, data } = image;
  for (let o = 0; o < data.length; o += 4) {
    const v = data[o];
    const [r, g, b] = JET[v];
    data[o] = r;
    data[o + 1] = g;
    data[o + 2] = b;
    data[o + 3] = v >= 13 ? Math.round(255 * Math.min(1, 0.25 + (0.75 * v) / 255)) : 0;
  }
  target.width = width;
  target.height = height;
  target.getContext("2d").putImageData(image, 0, 0);
}

export class ImagePanel {
  constructor(i18n) {
    this.i18n = i18n;
    this.el = {
      viewport: document.getElementById("viewport"),
      stage: document.getElementById("stage"),
      empty: document.getElementById("viewport-empty"),
      base: document.getElementById("base-image"),
      anatomyStack: document.getElementById("anatomy-stack"),
      anatomyFieldset: document.getElementById("anatomy-layers"),
      anatomyChecks: document.getElementById("anatomy-checks"),
      heatCanvas: document.getElementById("heat-canvas"),
      limeImage: document.getElementById("lime-image"),
      opacity: document.getElementById("opacity"),
      opacityValue: document.getElementById("opacity-value"),
      legend: document.getElementById("legend"),
      legendJet: document.getElementById("legend-jet"),
      legendLime: document.getElementById("legend-lime"),
    };
    this.heat = { gradcam_lungs: null, gradcam_full: null, lime: null }; // Blobs
    this.heatKind = "none";
    this.structures = [];
    this.urls = [];
    this.view = { zoom: 1, x: 0, y: 0, width: 0, height: 0 };
    this.bind();
    this.applyOpacity();
  }

  bind() {
    const { viewport, opacity } = this.el;
    opacity.addEventListener("input", () => this.applyOpacity());
    document.getElementById("zoom-in").addEventListener("click", () => this.zoomBy(1.25));
    document.getElementById("zoom-out").addEventListener("click", () => this.zoomBy(0.8));
    document.getElementById("zoom-reset").addEventListener("click", () => this.fit());
    for (const radio of document.querySelectorAll('input[name="heat"]')) {
      radio.addEventListener("change", () => radio.checked && this.showHeat(radio.value));
    }
    viewport.addEventListener("keydown", (event) => this.onKey(event));
    viewport.addEventListener("wheel", (event) => {
      if (this.el.stage.hidden) return;
      event.preventDefault();
      const box = viewport.getBoundingClientRect();
      this.zoomBy(event.deltaY < 0 ? 1.15 : 1 / 1.15, event.clientX - box.left, event.clientY - box.top);
    }, { passive: false });
    let drag = null;
    viewport.addEventListener("pointerdown", (event) => {
      drag = { x: event.clientX, y: event.clientY };
      viewport.setPointerCapture(event.pointerId);
    });
    viewport.addEventListener("pointermove", (event) => {
      if (!drag) return;
      this.panBy(event.clientX - drag.x, event.clientY - drag.y);
      drag = { x: event.clientX, y: event.clientY };
    });
    viewport.addEventListener("pointerup", () => { drag = null; });
    viewport.addEventListener("pointercancel", () => { drag = null; });
    new ResizeObserver(() => this.view.width && this.fit()).observe(viewport);
  }

  onKey(event) {
    const step = 40;
    const actions = {
      ArrowLeft: () => this.panBy(step, 0),
      ArrowRight: () => this.panBy(-step, 0),
      ArrowUp: () => this.panBy(0, step),
      ArrowDown: () => this.panBy(0, -step),
      "+": () => this.zoomBy(1.25),
      "=": () => this.zoomBy(1.25),
      "-": () => this.zoomBy(0.8),
      0: () => this.fit(),
    };
    const action = actions[event.key];
    if (action && !event.ctrlKey && !event.metaKey && !event.altKey) {
      event.preventDefault();
      action();
    }
  }

  clear() {
    for (const url of this.urls) URL.revokeObjectURL(url);
    this.urls = [];
    this.el.stage.hidden = true;
    this.el.empty.hidden = false;
    this.el.base.removeAttribute("src");
    this.el.anatomyStack.replaceChildren();
    this.el.anatomyChecks.replaceChildren();
    this.el.anatomyFieldset.disabled = true;
    this.structures = [];
    this.heat = { gradcam_lungs: null, gradcam_full: null, lime: null };
    for (const radio of document.querySelectorAll('input[name="heat"]')) {
      radio.disabled = radio.value !== "none";
      radio.checked = radio.value === "none";
    }
    this.showHeat("none");
  }

  objectUrl(blob) {
    const url = URL.createObjectURL(blob);
    this.urls.push(url);
    return url;
  }

  // The rendered radiograph; `width` x `height` is the upload's size (the stage's aspect).
  async setBase(blob, width, height) {
    this.view.width = width;
    this.view.height = height;
    const loaded = new Promise((resolve, reject) => {
      this.el.base.addEventListener("load", resolve, { once: true });
      this.el.base.addEventListener("error", reject, { once: true });
    });
    this.el.base.src = this.objectUrl(blob);
    this.el.base.alt = this.i18n.t("image.alt");
    await loaded;
    this.el.stage.hidden = false;
    this.el.empty.hidden = true;
    this.fit();
  }

  async setAnatomy(structures) {
    const known = new Map(STRUCTURES.map((s) => [s.name, s.colour]));
    const layers = await Promise.all(
      structures.map(async (s) => ({
        ...s,
        canvas: await maskLayer(s.blob, known.get(s.name) ?? [255, 255, 255], s.provenance === "derived"),
      })),
    );
    this.structures = layers;
    this.el.anatomyStack.replaceChildren(...layers.map((s) => s.canvas));
    this.renderAnatomyControls();
    this.el.anatomyFieldset.disabled = false;
    this.applyOpacity();
  }

  renderAnatomyControls() {
    const checks = this.structures.map((s) => {
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "checkbox";
      input.id = `layer-${s.name}`;
      input.checked = !s.canvas.hidden;
      input.addEventListener("change", () => { s.canvas.hidden = !input.checked; });
      const swatch = document.createElement("span");
      swatch.className = `swatch ${s.name}${s.provenance === "derived" ? " outline" : ""}`;
      swatch.setAttribute("aria-hidden", "true");
      const text = document.createElement("span");
      text.textContent = this.i18n.t(`structure.${s.name}`);
      label.append(input, swatch, text);
      if (s.provenance === "derived") {
        const tag = document.createElement("span");
        tag.className = "derived-tag";
        tag.textContent = this.i18n.t("structure.derived");
        label.append(tag);
      }
      return label;
    });
    this.el.anatomyChecks.replaceChildren(...checks);
  }

  async setHeat(kind, blob) {
    this.heat[kind] = blob;
    document.querySelector(`input[name="heat"][value="${kind}"]`).disabled = false;
    if (this.heatKind === kind) await this.showHeat(kind);
  }

  async showHeat(kind) {
    this.heatKind = kind;
    const blob = this.heat[kind];
    const { heatCanvas, limeImage, legend, legendJet, legendLime } = this.el;
    // Colour the new map first, then swap layers: no flicker, and the last choice wins.
    const coloured = blob && kind !== "lime" ? document.createElement("canvas") : null;
    if (coloured) await heatLayer(blob, coloured);
    if (this.heatKind !== kind) return;
    if (coloured) {
      heatCanvas.width = coloured.width;
      heatCanvas.height = coloured.height;
      heatCanvas.getContext("2d").drawImage(coloured, 0, 0);
    }
    heatCanvas.hidden = !coloured;
    limeImage.hidden = !(blob && kind === "lime");
    if (blob && kind === "lime") limeImage.src = this.objectUrl(blob);
    const shown = Boolean(blob) && kind !== "none";
    legend.hidden = !shown;
    legendJet.hidden = !(shown && kind.startsWith("gradcam"));
    legendLime.hidden = !(shown && kind === "lime");
  }

  selectHeat(kind) {
    const radio = document.querySelector(`input[name="heat"][value="${kind}"]`);
    if (radio && !radio.disabled) {
      radio.checked = true;
      return this.showHeat(kind);
    }
    return Promise.resolve();
  }

  applyOpacity() {
    const value = Number(this.el.opacity.value);
    this.el.opacityValue.textContent = this.i18n.percent(value / 100, 0);
    const alpha = String(value / 100);
    this.el.anatomyStack.style.opacity = alpha;
    this.el.heatCanvas.style.opacity = alpha;
    this.el.limeImage.style.opacity = alpha;
  }

  // Zoom 1 = the whole radiograph fits the viewport, centred.
  fit() {
    const { viewport, stage } = this.el;
    const { width, height } = this.view;
    if (!width) return;
    const scale = Math.min(viewport.clientWidth / width, viewport.clientHeight / height);
    stage.style.width = `${width * scale}px`;
    stage.style.height = `${height * scale}px`;
    this.view.zoom = 1;
    this.view.x = (viewport.clientWidth - width * scale) / 2;
    this.view.y = (viewport.clientHeight - height * scale) / 2;
    this.applyTransform();
  }

  zoomBy(factor, cx = null, cy = null) {
    if (!this.view.width) return;
    const { viewport } = this.el;
    const px = cx ?? viewport.clientWidth / 2;
    const py = cy ?? viewport.clientHeight / 2;
    const zoom = Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, this.view.zoom * factor));
    const k = zoom / this.view.zoom;
    this.view.x = px - (px - this.view.x) * k;
    this.view.y = py - (py - this.view.y) * k;
    this.view.zoom = zoom;
    this.applyTransform();
  }

  panBy(dx, dy) {
    if (!this.view.width) return;
    this.view.x += dx;
    this.view.y += dy;
    this.applyTransform();
  }

  applyTransform() {
    const { x, y, zoom } = this.view;
    this.el.stage.style.transform = `translate(${x}px, ${y}px) scale(${zoom})`;
  }

  relabel() {
    this.renderAnatomyControls();
    this.applyOpacity();
    if (this.el.base.src) this.el.base.alt = this.i18n.t("image.alt");
  }
}
