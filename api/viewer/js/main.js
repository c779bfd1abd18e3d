// Entry point: wires the upload, the result panel, the image panel and the tabs together.
// Order after an upload: /classify first (the result is on screen as soon as it answers),
// then /render, /segment and /explain/gradcam one after another, so one viewer never takes
// more than one inference slot. LIME, the report and attributions start on request.

import { ApiClient, ApiProblem, base64Blob, withRetry } from "./api.js";
import { $, el, list, nextFrame } from "./dom.js";
import { I18n } from "./i18n.js";
import { ImagePanel } from "./image.js";
import { AttributionsPanel, GradcamPanel, LimePanel } from "./panels.js";
import { ReportPanel } from "./report.js";
import { Tabs } from "./tabs.js";

const RENDER_MAX_SIDE = 2048;
const LANG_STORAGE = "cxr.lang";

class Viewer {
  constructor() {
    this.i18n = new I18n();
    this.api = new ApiClient();
    this.image = new ImagePanel(this.i18n);
    this.state = { limits: null, file: null, run: 0, classify: null, status: null, error: null };
    this.gradcam = new GradcamPanel(this);
    this.lime = new LimePanel(this);
    this.report = new ReportPanel(this);
    this.attributions = new AttributionsPanel(this);
    this.tabs = new Tabs($("tablist"));
  }

  async start() {
    const saved = sessionStorage.getItem(LANG_STORAGE);
    const lang = saved ?? (navigator.language?.toLowerCase().startsWith("ru") ? "ru" : "en");
    $("lang-select").value = lang;
    await this.i18n.load(lang);
    this.i18n.onChange(() => this.rerender());
    this.bindKey();
    this.bindUpload();
    $("lang-select").addEventListener("change", async (event) => {
      sessionStorage.setItem(LANG_STORAGE, event.target.value);
      await this.i18n.load(event.target.value);
    });
    this.rerender();
    await this.loadLimits();
  }

  // ---------------------------------------------------------------- messages
  setStatus(key, params = {}) {
    this.state.status = key ? { key, params } : null;
    this.renderStatus();
  }

  renderStatus() {
    const s = this.state.status;
    $("status").textContent = s ? this.i18n.t(s.key, s.params) : "";
  }

  setError(problem, stepKey = null) {
    this.state.error = problem ? { problem, stepKey } : null;
    this.renderError();
  }

  renderError() {
    const box = $("error");
    const e = this.state.error;
    box.hidden = !e;
    if (!e) {
      box.replaceChildren();
      return;
    }
    const lines = this.problemLines(e.problem);
    if (e.stepKey) lines[0] = `${this.i18n.t(e.stepKey)}: ${lines[0]}`;
    box.replaceChildren(...lines.map((line) => el("p", { text: line })));
  }

  // Localized explanation of an ApiProblem (or client-side check), most important line first.
  problemLines(problem) {
    const t = (k, p) => this.i18n.t(k, p);
    if (!(problem instanceof ApiProblem)) return [t("problem.client_error")];
    const key = `problem.${problem.code}`;
    let main;
    if (this.i18n.has(key)) main = t(key, problem.params ?? {});
    else if (problem.status >= 500) main = t("problem.generic_server", { status: problem.status, code: problem.code });
    else main = t("problem.generic_client", { status: problem.status, code: problem.code });
    const lines = [main];
    if (problem.retryAfterS !== null && problem.retryAfterS !== undefined) {
      lines.push(t("problem.retry_after", { seconds: problem.retryAfterS }));
    }
    if (problem.requestId) lines.push(t("problem.request_id", { id: problem.requestId }));
    return lines;
  }

  onRetryWait(problem, seconds) {
    this.setStatus("status.busy_retrying", { seconds });
  }

  // ---------------------------------------------------------------- API key
  bindKey() {
    const input = $("api-key");
    input.value = this.api.key;
    $("key-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      this.api.key = input.value.trim();
      this.renderKeyStatus();
      await this.loadLimits();
    });
    $("key-clear").addEventListener("click", () => {
      this.api.key = "";
      input.value = "";
      this.renderKeyStatus();
    });
    this.renderKeyStatus();
  }

  renderKeyStatus() {
    $("key-status").textContent = this.i18n.t(this.api.key ? "key.set" : "key.none");
  }

  async loadLimits() {
    try {
      this.state.limits = await this.api.getJson("limits");
      if (this.state.error?.stepKey === "step.limits") this.setError(null);
    } catch (problem) {
      this.state.limits = null;
      this.setError(problem, "step.limits");
    }
    this.renderLimits();
    this.lime.renderOptions();
  }

  renderLimits() {
    const limits = this.state.limits;
    $("limit-hint").textContent = limits
      ? this.i18n.t("upload.limit", { size: this.i18n.bytes(limits.max_upload_bytes) })
      : "";
  }

  // ---------------------------------------------------------------- upload
  bindUpload() {
    const input = $("file-input");
    const zone = $("drop-zone");
    $("pick-file").addEventListener("click", () => input.click());
    input.addEventListener("change", () => {
      if (input.files.length) this.analyse(input.files[0]);
      input.value = "";
    });
    for (const type of ["dragenter", "dragover"]) {
      zone.addEventListener(type, (event) => {
        event.preventDefault();
        zone.classList.add("dragging");
      });
    }
    for (const type of ["dragleave", "drop"]) {
      zone.addEventListener(type, () => zone.classList.remove("dragging"));
    }
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      const files = event.dataTransfer?.files;
      if (files?.length) this.analyse(files[0]);
    });
    // A file dropped next to the zone must not make the browser navigate away.
    window.addEventListener("dragover", (event) => event.preventDefault());
    window.addEventListener("drop", (event) => event.preventDefault());
  }

  // Client-side checks against the server's own limits (the server enforces them too).
  checkFile(file) {
    if (file.size === 0) return new ApiProblem({ code: "empty_upload", status: 422 });
    const max = this.state.limits?.max_upload_bytes;
    if (max && file.size > max) {
      const p = new ApiProblem({ code: "client_file_too_large", status: 413 });
      p.params = { size: this.i18n.bytes(file.size), limit: this.i18n.bytes(max) };
      return p;
    }
    return null;
  }

  resetResults() {
    this.state.classify = null;
    this.image.clear();
    this.gradcam.reset();
    this.lime.reset();
    this.report.reset();
    this.attributions.reset();
    this.renderResult();
  }

  async analyse(file) {
    if (!this.state.limits) await this.loadLimits();
    this.setError(null);
    const refused = this.checkFile(file);
    if (refused) {
      this.setError(refused);
      return;
    }
    this.lime.cancelRunning();
    this.resetResults();
    const run = ++this.state.run;
    this.state.file = file;
    const current = () => this.state.run === run;
    try {
      this.state.classify = await this.classify(file);
    } catch (problem) {
      if (current()) {
        this.setStatus(null);
        this.setError(problem, "step.classify");
      }
      return;
    } finally {
      $("upload-progress-row").hidden = true;
    }
    if (!current()) return;
    performance.mark("classify-response");
    this.renderResult();
    await nextFrame();
    performance.mark("result-shown");
    performance.measure("classify-to-result", "classify-response", "result-shown");
    this.lime.enable();
    this.report.enable();
    this.attributions.enable();
    await this.views(file, current);
  }

  async classify(file) {
    const row = $("upload-progress-row");
    const bar = $("upload-progress");
    bar.value = 0;
    row.hidden = false;
    this.setStatus("status.uploading", { percent: 0 });
    const onProgress = (loaded, total) => {
      const percent = Math.round((100 * loaded) / total);
      bar.value = percent;
      $("upload-progress-text").textContent = this.i18n.percent(loaded / total, 0);
      this.setStatus(percent >= 100 ? "status.classifying" : "status.uploading", { percent });
    };
    const { body } = await withRetry(
      () => this.api.upload("classify", file, { onProgress }),
      (p, s) => this.onRetryWait(p, s),
    );
    return body;
  }

  // The image, anatomy and Grad-CAM, one request at a time; a failure stops only its step.
  async views(file, current) {
    const retry = (call) => withRetry(call, (p, s) => this.onRetryWait(p, s));
    const steps = [
      ["status.rendering", "step.render", async () => {
        const { body } = await retry(() =>
          this.api.upload("render", file, { params: { max_side: RENDER_MAX_SIDE }, responseType: "blob" }),
        );
        if (current()) await this.image.setBase(body, this.state.classify.image.width, this.state.classify.image.height);
      }],
      ["status.segmenting", "step.segment", async () => {
        const { body } = await retry(() => this.api.upload("segment", file));
        const structures = body.structures.map((s) => ({ ...s, blob: base64Blob(s.mask_png) }));
        if (current()) await this.image.setAnatomy(structures);
      }],
      ["status.explaining", "step.gradcam", async () => {
        const { body } = await retry(() => this.api.upload("explain/gradcam", file));
        if (!current()) return;
        this.gradcam.set(body);
        await this.image.setHeat("gradcam_lungs", base64Blob(body.heatmap_lungs_png));
        await this.image.setHeat("gradcam_full", base64Blob(body.heatmap_full_png));
        await this.image.selectHeat("gradcam_lungs");
      }],
    ];
    for (const [statusKey, stepKey, step] of steps) {
      if (!current()) return;
      this.setStatus(statusKey);
      try {
        await step();
      } catch (problem) {
        if (!current()) return;
        if (stepKey === "step.gradcam") this.gradcam.fail(problem);
        else this.setError(problem, stepKey);
      }
    }
    if (current()) this.setStatus("status.done");
  }

  // ---------------------------------------------------------------- result panel
  renderResult() {
    const c = this.state.classify;
    $("result-empty").hidden = Boolean(c);
    $("result").hidden = !c;
    if (!c) return;
    const t = (k, p) => this.i18n.t(k, p);
    const decision = $("decision");
    const known = ["finding", "no_finding", "indeterminate"].includes(c.decision);
    decision.className = `decision ${known ? c.decision : ""}`;
    decision.textContent = known ? t(`decision.${c.decision}`) : String(c.decision);
    $("probability").textContent = this.i18n.percent(c.probability_finding, 1);
    $("probability").dataset.value = String(c.probability_finding);
    $("threshold").textContent = this.i18n.percent(c.threshold, 1);
    $("model").textContent = `${c.model.name} ${c.model.version} (sha256 ${c.model.sha256.slice(0, 12)}…)`;
    const img = c.image;
    $("image-info").textContent = t("result.image_value", {
      format: String(img.format).toUpperCase(), width: img.width, height: img.height,
      bits: img.bits_stored, photometric: img.photometric,
    });
    $("quality").replaceChildren(this.qualityNode(c.input_quality));
    $("result-disclaimer").textContent = t("result.disclaimer");
  }

  // The input_quality block of /classify (the input gate's flags). Absent: an older server.
  qualityNode(quality) {
    const t = (k, p) => this.i18n.t(k, p);
    if (!quality || typeof quality !== "object") return el("span", { text: t("quality.not_reported") });
    let flags = [];
    if (Array.isArray(quality.flags)) flags = quality.flags;
    else flags = Object.entries(quality).filter(([, v]) => v === true).map(([k]) => k);
    const names = flags.map((f) => {
      const code = typeof f === "string" ? f : String(f?.code ?? f?.name ?? f?.flag ?? "?");
      return this.i18n.has(`quality.flag.${code}`) ? t(`quality.flag.${code}`) : code;
    });
    return names.length ? list(names) : el("span", { text: t("quality.none") });
  }

  rerender() {
    this.renderStatus();
    this.renderError();
    this.renderKeyStatus();
    this.renderLimits();
    this.renderResult();
    this.image.relabel();
    this.gradcam.render();
    this.lime.render();
    this.report.render();
    this.attributions.render();
  }
}

const viewer = new Viewer();
viewer.start().catch(() => {
  $("error").hidden = false;
  $("error").textContent = "The viewer could not start: reload the page.";
});
