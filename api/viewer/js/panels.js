// The Grad-CAM, LIME and Attributions tabs. Each panel keeps its data and re-renders from it,
// so switching the language re-labels everything without asking the server again.

import { ApiProblem, base64Blob, withRetry } from "./api.js";
import { $, el, facts, list, numCell, row } from "./dom.js";

const POLL_MS = 500;

function zoneName(i18n, zoneId) {
  if (!zoneId) return i18n.t("zone.margin");
  const key = `zone.${zoneId}`;
  return i18n.has(key) ? i18n.t(key) : zoneId;
}

function qualityPairs(i18n, q) {
  const t = (k, p) => i18n.t(k, p);
  const pairs = [[t("quality.confidence"), i18n.percent(q.confidence, 1)]];
  if (q.energy_in_lungs !== null && q.energy_in_lungs !== undefined) {
    pairs.push([t("quality.energy_in_lungs"), i18n.percent(q.energy_in_lungs, 0)]);
  }
  if (q.agreement_iou !== null && q.agreement_iou !== undefined) {
    pairs.push([t("quality.agreement_iou"), i18n.number(q.agreement_iou, 2)]);
  }
  if (q.deletion) {
    pairs.push([t("quality.deletion"), t("quality.deletion_value", {
      top: i18n.number(q.deletion.top_drop, 3), random: i18n.number(q.deletion.random_drop, 3),
    })]);
  }
  pairs.push([t("quality.weak"), t(q.weak ? "common.yes" : "common.no")]);
  if (q.reasons?.length) {
    pairs.push([t("quality.reasons"), list(q.reasons.map((r) => (i18n.has(`reason.${r}`) ? t(`reason.${r}`) : r)))]);
  }
  return pairs;
}

function showProblem(viewer, node, problem) {
  node.replaceChildren(...viewer.problemLines(problem).map((line) => el("span", { text: `${line} ` })));
}

// ------------------------------------------------------------------------------ Grad-CAM
export class GradcamPanel {
  constructor(viewer) {
    this.viewer = viewer;
    this.reset();
  }

  reset() {
    this.data = null;
    this.problem = null;
    this.render();
  }

  set(body) {
    this.data = body;
    this.problem = null;
    this.render();
  }

  fail(problem) {
    this.problem = problem;
    this.render();
  }

  render() {
    const { i18n } = this.viewer;
    const t = (k, p) => i18n.t(k, p);
    const status = $("gradcam-status");
    $("gradcam-body").hidden = !this.data;
    if (this.problem) {
      status.hidden = false;
      showProblem(this.viewer, status, this.problem);
      return;
    }
    status.hidden = Boolean(this.data);
    status.textContent = t("gradcam.empty");
    if (!this.data) return;
    const d = this.data;
    $("gradcam-summary").textContent = t("gradcam.summary", {
      target: t(`decision.${d.target}`), probability: i18n.percent(d.probability_finding, 1),
    });
    const rows = d.zones.map((z) => row([
      el("td", { text: z.name_en, attrs: { lang: "en" } }),
      el("td", { text: z.name_ru, attrs: { lang: "ru" } }),
      numCell(i18n.number(z.gradcam_mean, 2)),
      numCell(i18n.number(z.gradcam_peak, 2)),
      numCell(i18n.number(z.fused, 2)),
      numCell(i18n.percent(z.area_fraction, 0)),
    ]));
    $("gradcam-zones").tBodies[0].replaceChildren(...rows);
    facts($("gradcam-quality"), qualityPairs(i18n, d.quality));
  }
}

// ------------------------------------------------------------------------------ LIME job
export class LimePanel {
  constructor(viewer) {
    this.viewer = viewer;
    this.job = null; // {url, state, started, seed, samples}
    this.timer = null;
    $("lime-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.start();
    });
    $("lime-cancel").addEventListener("click", () => this.cancel());
    this.reset();
  }

  renderOptions() {
    const limits = this.viewer.state.limits?.lime_samples ?? { min: 50, max: 1000, default: 200 };
    const values = [...new Set([limits.min, 100, limits.default, 500, limits.max])]
      .filter((v) => v >= limits.min && v <= limits.max)
      .sort((a, b) => a - b);
    const select = $("lime-samples");
    const keep = Number(select.value) || limits.default;
    select.replaceChildren(...values.map((v) => el("option", { text: v, attrs: { value: String(v) } })));
    select.value = String(values.includes(keep) ? keep : limits.default);
  }

  enable() {
    $("lime-start").disabled = false;
  }

  reset() {
    this.stopPolling();
    this.job = null;
    this.data = null;
    this.problem = null;
    $("lime-start").disabled = true;
    this.render();
  }

  stopPolling() {
    clearTimeout(this.timer);
    this.timer = null;
  }

  // A new upload: the old job's result is of no use any more.
  cancelRunning() {
    if (this.job && ["queued", "running"].includes(this.job.state)) {
      this.viewer.api.deleteJson(this.job.url).catch(() => {});
    }
    this.stopPolling();
  }

  async start() {
    const { viewer } = this;
    const file = viewer.state.file;
    if (!file) return;
    const seedInput = $("lime-seed");
    if (!seedInput.checkValidity()) {
      seedInput.reportValidity();
      return;
    }
    this.cancelRunning();
    const seed = Number(seedInput.value || 0);
    const samples = Number($("lime-samples").value);
    this.data = null;
    this.problem = null;
    this.job = { url: null, state: "submitting", started: performance.now(), seed, samples };
    this.render();
    const run = viewer.state.run;
    try {
      const { body } = await withRetry(
        () => viewer.api.upload("explain/lime/jobs", file, { params: { seed, n_samples: samples } }),
        (p, s) => viewer.onRetryWait(p, s),
      );
      if (run !== viewer.state.run) return;
      this.job.url = body.status_url;
      this.accept(body);
    } catch (problem) {
      if (run !== viewer.state.run) return;
      this.job.state = "failed";
      this.problem = problem;
      this.render();
    }
  }

  accept(job) {
    this.job.state = job.state;
    if (job.state === "succeeded") {
      this.data = job.result;
      this.viewer.image.setHeat("lime", base64Blob(job.result.overlay_png))
        .then(() => this.viewer.image.selectHeat("lime"));
    } else if (job.state === "failed") {
      const e = job.error ?? {};
      this.problem = new ApiProblem({ status: e.status ?? 500, code: e.code ?? "internal_error", requestId: e.request_id ?? "" });
    } else if (job.state === "queued" || job.state === "running") {
      this.timer = setTimeout(() => this.poll(), POLL_MS);
    }
    this.render();
  }

  async poll() {
    const job = this.job;
    try {
      const body = await this.viewer.api.getJson(job.url);
      if (this.job === job) this.accept(body);
    } catch (problem) {
      if (this.job !== job) return;
      this.job.state = "failed";
      this.problem = problem;
      this.render();
    }
  }

  async cancel() {
    const job = this.job;
    if (!job?.url) return;
    this.stopPolling();
    try {
      const body = await this.viewer.api.deleteJson(job.url);
      if (this.job === job) this.accept(body);
    } catch (problem) {
      if (this.job !== job) return;
      this.problem = problem;
      this.render();
    }
  }

  render() {
    const { i18n } = this.viewer;
    const t = (k, p) => i18n.t(k, p);
    const job = this.job;
    const active = job && ["submitting", "queued", "running"].includes(job.state);
    $("lime-cancel").disabled = !(active && job.url);
    $("lime-start").disabled = active || !this.viewer.state.classify;
    $("lime-progress-row").hidden = !active;
    const status = $("lime-status");
    if (this.problem) {
      showProblem(this.viewer, status, this.problem);
    } else if (job) {
      const seconds = Math.round((performance.now() - job.started) / 1000);
      status.textContent = t(`lime.state.${job.state}`, { seconds, seed: job.seed, samples: job.samples });
      $("lime-progress-text").textContent = t("lime.elapsed", { seconds });
    } else {
      status.textContent = t("lime.empty");
    }
    $("lime-body").hidden = !this.data;
    if (!this.data) return;
    const d = this.data;
    $("lime-summary").textContent = t("lime.summary", {
      seed: d.seed, samples: d.n_samples, superpixels: d.n_superpixels,
      r2: i18n.number(d.fit_r2, 2), target: t(`decision.${d.target}`),
    });
    const line = (s, sign) => row([
      t(sign > 0 ? "lime.supports" : "lime.opposes"),
      numCell(i18n.number(s.weight, 4)),
      zoneName(i18n, s.zone_id),
      numCell(i18n.percent(s.area_fraction, 1)),
    ]);
    $("lime-table").tBodies[0].replaceChildren(
      ...d.positive.map((s) => line(s, 1)), ...d.negative.map((s) => line(s, -1)),
    );
    facts($("lime-quality"), qualityPairs(i18n, d.quality));
  }
}

// ------------------------------------------------------------------------------ attributions
export class AttributionsPanel {
  constructor(viewer) {
    this.viewer = viewer;
    $("attr-start").addEventListener("click", () => this.start());
    this.reset();
  }

  enable() {
    $("attr-start").disabled = false;
  }

  reset() {
    this.data = null;
    this.problem = null;
    this.busy = false;
    this.lang = null;
    $("attr-start").disabled = true;
    this.render();
  }

  async start() {
    const { viewer } = this;
    const file = viewer.state.file;
    if (!file || this.busy) return;
    const run = viewer.state.run;
    this.busy = true;
    this.problem = null;
    this.data = null;
    this.lang = viewer.i18n.lang;
    this.render();
    try {
      const { body } = await withRetry(
        () => viewer.api.upload("explain/report", file, { params: { lang: this.lang } }),
        (p, s) => viewer.onRetryWait(p, s),
      );
      if (run === viewer.state.run) this.data = body;
    } catch (problem) {
      if (run === viewer.state.run) this.problem = problem;
    } finally {
      this.busy = false;
      if (run === viewer.state.run) this.render();
    }
  }

  playerName(player) {
    const { i18n } = this.viewer;
    if (player.startsWith("zone:")) return zoneName(i18n, player.slice(5));
    return i18n.has(`player.${player}`) ? i18n.t(`player.${player}`) : player;
  }

  render() {
    const { i18n } = this.viewer;
    const t = (k, p) => i18n.t(k, p);
    $("attr-start").disabled = this.busy || !this.viewer.state.classify;
    const status = $("attr-status");
    if (this.problem) showProblem(this.viewer, status, this.problem);
    else status.textContent = t(this.busy ? "attr.busy" : "attr.empty");
    const a = this.data?.attributions;
    $("attr-body").hidden = !a;
    if (!a) return;
    $("attr-summary").textContent = t("attr.summary", {
      method: t(`attr.method.${a.method}`), evaluations: a.evaluations,
      language: t(`lang.${this.lang}`),
    });
    const sections = ["findings", "interpretation", "recommendations"];
    const order = a.players.map((_, i) => i).sort((i, j) => Math.abs(a.values[j]) - Math.abs(a.values[i]));
    const fmt = (v) => (v === undefined ? "—" : i18n.number(v, 3));
    $("attr-table").tBodies[0].replaceChildren(...order.map((i) => row([
      el("th", { text: this.playerName(a.players[i]), attrs: { scope: "row" } }),
      numCell(fmt(a.values[i])),
      ...sections.map((s) => numCell(fmt(a.section_values[s]?.[i]))),
    ])));
    const strongest = a.tokens
      .filter((tok) => tok.text.trim().length > 1)
      .map((tok) => {
        let best = 0;
        tok.values.forEach((v, i) => { if (Math.abs(v) > Math.abs(tok.values[best])) best = i; });
        return { tok, best, value: tok.values[best] ?? 0 };
      })
      .filter((x) => Math.abs(x.value) > 1e-6)
      .sort((x, y) => Math.abs(y.value) - Math.abs(x.value))
      .slice(0, 12);
    $("attr-tokens").tBodies[0].replaceChildren(...strongest.map(({ tok, best, value }) => row([
      tok.text,
      tok.section ? t(`section.${tok.section}`) : "—",
      this.playerName(a.players[best] ?? ""),
      numCell(i18n.number(value, 3)),
    ])));
  }
}
