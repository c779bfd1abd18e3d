// The Report tab: POST /report/stream in the interface language, shown section by section as
// the server-sent events arrive (evidence, section x3, report or error). Report text is model
// output: untrusted, so it only ever goes into textContent.

import { ApiProblem, readEvents } from "./api.js";
import { $, el, facts, list } from "./dom.js";

const SECTIONS = ["findings", "interpretation", "recommendations"];

export class ReportPanel {
  constructor(viewer) {
    this.viewer = viewer;
    $("report-start").addEventListener("click", () => this.start());
    this.reset();
  }

  enable() {
    $("report-start").disabled = false;
  }

  reset() {
    this.controller?.abort();
    this.controller = null;
    this.s = { lang: null, streaming: false, evidence: null, sections: [], report: null, problem: null };
    $("report-start").disabled = true;
    this.render();
  }

  async start() {
    const { viewer } = this;
    const file = viewer.state.file;
    if (!file || this.s.streaming) return;
    this.controller?.abort();
    const controller = new AbortController();
    this.controller = controller;
    this.s = { lang: viewer.i18n.lang, streaming: true, evidence: null, sections: [], report: null, problem: null };
    this.render();
    try {
      const response = await viewer.api.postFile("report/stream", file, {
        // Removed sentences come back only on request (debug=true): they are unchecked text.
        params: { lang: this.s.lang, ...($("report-debug").checked ? { debug: "true" } : {}) },
        signal: controller.signal,
      });
      for await (const { event, data } of readEvents(response)) {
        if (this.controller !== controller) return;
        this.accept(event, data);
      }
      if (!this.s.report && !this.s.problem) this.s.problem = new ApiProblem({ code: "stream_ended" });
    } catch (problem) {
      if (problem?.name === "AbortError" || this.controller !== controller) return;
      this.s.problem = problem instanceof ApiProblem ? problem : new ApiProblem({});
    }
    this.s.streaming = false;
    this.render();
  }

  accept(event, data) {
    if (event === "evidence") this.s.evidence = data;
    else if (event === "section") this.s.sections.push(data);
    else if (event === "report") this.s.report = data;
    else if (event === "error") {
      this.s.problem = new ApiProblem({
        status: Number(data.status ?? 503), code: String(data.code ?? "unavailable"),
        requestId: String(data.request_id ?? ""), retryAfterS: data.retry_after_s ?? null,
      });
    }
    this.render();
  }

  render() {
    const { i18n } = this.viewer;
    const t = (k, p) => i18n.t(k, p);
    const s = this.s;
    $("report-start").disabled = s.streaming || !this.viewer.state.classify;
    $("report-lang-note").textContent = t("report.lang_note", { language: t(`lang.${i18n.lang}`) });
    const status = $("report-status");
    if (s.problem) {
      status.replaceChildren(...this.viewer.problemLines(s.problem).map((line) => el("span", { text: `${line} ` })));
    } else if (s.streaming) {
      status.textContent = t(s.evidence ? "report.writing" : "report.vision");
    } else {
      status.textContent = t(s.report ? "report.done" : "report.empty");
    }
    this.renderEvidence();
    this.renderSections();
    this.renderGrounding();
  }

  renderEvidence() {
    const { i18n } = this.viewer;
    const e = this.s.evidence;
    const box = $("report-evidence");
    box.hidden = !e;
    if (!e) return;
    box.textContent = i18n.t("report.evidence", {
      decision: i18n.t(`decision.${e.decision}`),
      probability: i18n.percent(e.probability_finding, 1),
      zones: e.zones.length,
      lime: i18n.t(e.lime_used ? "common.yes" : "common.no"),
    });
  }

  renderSections() {
    const { i18n } = this.viewer;
    const article = $("report-sections");
    article.lang = this.s.lang ?? i18n.lang;
    const nodes = this.s.sections
      .filter((sec) => SECTIONS.includes(sec.name))
      .map((sec) => {
        const provenance = ["llm", "llm_filtered", "template"].includes(sec.provenance) ? sec.provenance : "template";
        const heading = el("h3", {}, [
          el("span", { text: sec.heading }),
          el("span", { text: i18n.t(`provenance.${provenance}`), className: `badge ${provenance}`, attrs: { lang: i18n.lang } }),
        ]);
        return el("section", { attrs: { "data-section": sec.name } }, [heading, el("p", { text: sec.text })]);
      });
    article.replaceChildren(...nodes);
  }

  renderGrounding() {
    const { i18n } = this.viewer;
    const t = (k, p) => i18n.t(k, p);
    const r = this.s.report;
    $("report-grounding").hidden = !r;
    if (!r) return;
    const g = r.grounding;
    const verdict = el("span", {
      text: t(g.passed ? "report.passed" : "report.failed"), className: `badge ${g.passed ? "passed" : "failed"}`,
    });
    const zones = g.supported_zones.map((z) => (i18n.has(`zone.${z}`) ? t(`zone.${z}`) : z));
    const pairs = [
      [t("report.grounding_result"), verdict],
      [t("report.unsupported_left"), String(g.unsupported_claims_left)],
      [t("report.supported_zones"), zones.length ? zones.join(", ") : t("common.none")],
      [t("report.llm_valid"), t(g.llm_output_valid ? "common.yes" : "common.no")],
      [t("report.language_mode"), t(`report.mode.${r.language_info.mode}`)],
      [t("report.llm"), `${r.reproducibility.llm_backend} / ${r.reproducibility.llm_model}`],
    ];
    const fallbacks = Object.entries(g.fallback_reasons ?? {});
    if (fallbacks.length) {
      pairs.push([t("report.fallbacks"), list(fallbacks.map(([sec, why]) => `${t(`section.${sec}`)}: ${why}`))]);
    }
    facts($("report-grounding-facts"), pairs);
    const removed = $("report-removed");
    removed.hidden = g.removed.length === 0;
    $("report-removed-summary").textContent = t("report.removed", { count: g.removed.length });
    $("report-removed-list").replaceChildren(...g.removed.map((x) => el("li", {}, [
      el("q", { text: x.text, attrs: { lang: r.language_info.generation_language } }),
      el("span", { text: ` — ${i18n.has(`reason.${x.reason}`) ? t(`reason.${x.reason}`) : x.reason}`, className: "muted" }),
    ])));
    $("report-disclaimer").textContent = r.disclaimer;
    $("report-disclaimer").lang = r.language;
  }
}
