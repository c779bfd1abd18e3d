"""Render ``weights/MODEL_CARD.md`` from the manifests and the comparison JSON files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training.calibration_card import calibration_section
from training.gate_card import input_gate_section
from training.label_audit_card import label_audit_section
from training.seg_loso_card import seg_loso_section

GOALS = {"kermany": 0.99, "nih": 0.93}
ADULT_SOURCES = ("nih", "jsrt", "ieee8023", "covidqu", "covid19rad")
LOSO_GOAL = 0.85
ECE_GOALS = (0.05, 0.10)  # pooled, per source
SENS_GOAL, SPEC_GOAL = 0.85, 0.80


def _fmt(x: Any, nd: int = 3) -> str:
    if isinstance(x, (int, float)):
        return "n/a" if x != x else f"{x:.{nd}f}"
    return str(x)


def _cls_table(metrics: dict[str, dict[str, Any]]) -> list[str]:
    header = (
        "| source | n (pos) | AUROC [95 % CI] | goal | sens / spec @ own population thr "
        "| sens / spec @ adult thr | sens / spec @ pediatric thr | sens @ spec ≥ 0.80 "
        "| ECE before → after |"
    )
    lines = [
        header,
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for src, m in metrics.items():
        lo, hi = m["auroc_ci95"]
        goal = GOALS.get(src)
        goal_txt = "" if goal is None else (f"≥ {goal} {'met' if m['auroc'] >= goal else 'MISSED'}")
        cells = [
            src,
            f"{m['n']} ({m['n_positive']})",
            f"{_fmt(m['auroc'])} [{_fmt(lo)}, {_fmt(hi)}]",
            goal_txt,
            f"{_fmt(m['sensitivity'])} / {_fmt(m['specificity'])}",
            f"{_fmt(m.get('sens_at_adult_thr'))} / {_fmt(m.get('spec_at_adult_thr'))}",
            f"{_fmt(m.get('sens_at_pediatric_thr'))} / {_fmt(m.get('spec_at_pediatric_thr'))}",
            _fmt(m.get("sens_at_spec80")),
            f"{_fmt(m['ece_uncalibrated'])} → {_fmt(m['ece_calibrated'])}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _ci(m: dict[str, Any]) -> str:
    lo, hi = m["auroc_ci95"]
    return f"{_fmt(m['auroc'])} [{_fmt(lo)}, {_fmt(hi)}]"


LOSO_NAMES = {"b0-lite0-transplant": "B0 (Lite0 ImageNet transplant)", "lite0": "Lite0"}


def _column(run: dict[str, Any]) -> str:
    """A LOSO run's column: its experiment variant, else its architecture."""
    return str(run.get("variant", run["init"]))


def _loso_table(loso: dict[str, Any] | None) -> str:
    """Held-out AUROC [95 % CI] per fold/source and init; sens/spec at the fold's threshold."""
    if not loso or not loso.get("runs"):
        return "_not run in this build_"
    inits = sorted({_column(r) for r in loso["runs"]})
    header = ["held out", "scored", "n (pos)"] + [
        f"{LOSO_NAMES.get(i, i)}: AUROC [95 % CI]; sens / spec @ adult thr" for i in inits
    ]
    cells: dict[tuple[str, str], dict[str, str]] = {}
    counts: dict[tuple[str, str], str] = {}
    for run in loso["runs"]:
        for scored, m in run["metrics"].items():
            key = (run["fold"], scored)
            counts[key] = f"{m['n']} ({m['n_positive']})"
            cells.setdefault(key, {})[_column(run)] = (
                f"{_ci(m)}; {_fmt(m['sensitivity'])} / {_fmt(m['specificity'])}"
            )
    rows = [
        [fold, scored, counts[(fold, scored)]] + [cells[(fold, scored)].get(i, "—") for i in inits]
        for fold, scored in sorted(cells)
    ]
    lines = [_table(header, rows)]
    if loso.get("paired"):
        lines.append("")
        lines.append(
            _table(
                ["held out", "AUROC difference", "paired bootstrap 95 % CI"],
                [
                    [
                        r["fold"],
                        f"{LOSO_NAMES.get(r['a'], r['a'])} − {LOSO_NAMES.get(r['b'], r['b'])}"
                        f" = {r['auroc_diff']:+.3f}",
                        f"[{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}]",
                    ]
                    for r in loso["paired"]
                ],
            )
        )
    prev = loso.get("previous_release")
    if prev:
        lines.append("")
        lines.append(
            "Previous release on the same held-out rows (frozen-trunk Lite0 trained on "
            f"{', '.join(prev['trained_on'])}; a held-out score only for sources outside that "
            "list):"
        )
        lines.append("")
        lines.append(
            _table(
                ["held out", "scored", "n (pos)", "AUROC [95 % CI]; sens / spec @ its threshold"],
                [
                    [
                        fold,
                        scored,
                        f"{m['n']} ({m['n_positive']})",
                        f"{_ci(m)}; {_fmt(m['sensitivity'])} / {_fmt(m['specificity'])}"
                        + (
                            " (trained on: not held out)"
                            if set(fold.split("+") if scored == "pooled" else [scored])
                            & set(prev["trained_on"])
                            else ""
                        ),
                    ]
                    for fold, metrics in sorted(prev["folds"].items())
                    for scored, m in metrics.items()
                ],
            )
        )
    for exp in loso.get("experiments", []):
        lines.append("")
        if "paired" in exp:  # an architecture comparison under another recipe: its own protocol
            lines.append(f"Experiment `{exp['name']}` ({exp['what']}):")
            lines.append("")
            lines.append(_loso_table({"runs": exp["runs"], "paired": exp["paired"]}))
            lines += _verdicts(exp)
            continue
        lines.append(f"Experiment `{exp['name']}` ({exp['what']}), same folds and protocol:")
        lines.append("")
        lines.append(
            _table(
                ["held out", "scored", "n (pos)", "AUROC [95 % CI]", "steps done"],
                [
                    [r["fold"], scored, f"{m['n']} ({m['n_positive']})", _ci(m), r["train_steps"]]
                    for r in sorted(exp["runs"], key=lambda r: r["fold"])
                    for scored, m in sorted(r["metrics"].items())
                ],
            )
        )
    run0 = loso["runs"][0]["config"]
    lines.append("")
    lines.append(
        f"Reduced LOSO protocol (CPU budget): {run0['size']} px, {run0['epochs']} epochs × "
        f"{run0['samples_per_epoch']} sampled images, batch {run0['batch_size']}; held-out "
        "images scored at the same size; at most "
        f"{max(m['n'] for r in loso['runs'] for k, m in r['metrics'].items() if k != 'pooled')}"
        " images per "
        "held-out source (stratified by label, seeded). Wall time per run: "
        + ", ".join(
            f"{LOSO_NAMES.get(_column(r), _column(r))}/{r['fold']} {r['wall_s'] / 60:.1f} min "
            f"({r['train_steps']} steps done)"
            for r in loso["runs"]
        )
        + "."
    )
    return "\n".join(lines)


def _verdicts(exp: dict[str, Any]) -> list[str]:
    """Each variant against the shipping rule, with the commands that produced the runs."""
    lines: list[str] = []
    for variant, v in sorted(exp.get("verdicts", {}).items()):
        better = ", ".join(v["better"]) or "none"
        worse = ", ".join(v["worse"]) or "none"
        missing = v.get("folds_missing", [])
        lines.append("")
        lines.append(
            f"`{variant}` vs `{exp['baseline']}` on {len(v['folds_compared'])} fold(s): "
            f"better (paired 95 % CI above 0) on {better}; worse (CI below 0) on {worse}"
            + (f"; not run on {', '.join(missing)}" if missing else "")
            + ": "
            + ("**wins**" if v["wins"] else "does not win")
            + " (rule: better on at least one fold, worse on none, every fold run)."
        )
    commands = sorted({r["command"] for r in exp["runs"] if "command" in r})
    if commands:
        lines.append("")
        lines.append("Commands: " + "; ".join(f"`{c}`" for c in commands) + ".")
    if exp.get("note"):
        lines += ["", str(exp["note"])]
    return lines


def _goal(ok: bool | None) -> str:
    return "not computable" if ok is None else ("met" if ok else "**not met**")


def _goals(cls: dict[str, Any], loso: dict[str, Any] | None) -> str:
    """Each goal of the issue with the measured value and met / not met."""
    test = cls["extra"]["metrics"]["test"]
    lines = ["| goal | measured | status |", "|---|---|---|"]
    for src, goal in GOALS.items():
        if src in test:
            a = test[src]["auroc"]
            lines.append(f"| {src} test AUROC ≥ {goal} | {_fmt(a)} | {_goal(a >= goal)} |")
    for src in ADULT_SOURCES:
        if src in test:
            v = test[src].get("sens_at_spec80", float("nan"))
            ok = None if v != v else v >= SENS_GOAL
            lines.append(
                f"| {src} test sensitivity ≥ {SENS_GOAL} at specificity ≥ {SPEC_GOAL} "
                f"| {_fmt(v)} | {_goal(ok)} |"
            )
    pooled = test["all"]["ece_calibrated"]
    lines.append(
        f"| pooled test ECE ≤ {ECE_GOALS[0]} | {_fmt(pooled)} | {_goal(pooled <= ECE_GOALS[0])} |"
    )
    for src, m in test.items():
        if src != "all" and not src.startswith("population:"):
            e = m["ece_calibrated"]
            lines.append(
                f"| {src} test ECE ≤ {ECE_GOALS[1]} | {_fmt(e)} | {_goal(e <= ECE_GOALS[1])} |"
            )
    runs, where = _shipped_loso_runs(cls, loso)
    for run in runs:
        for scored, m in run["metrics"].items():
            a = m["auroc"]
            ok = None if a != a else a >= LOSO_GOAL
            lines.append(
                f"| LOSO AUROC ≥ {LOSO_GOAL}: {scored} (held out: {run['fold']}{where}) "
                f"| {_fmt(a)} | {_goal(ok)} |"
            )
    return "\n".join(lines)


def _shipped_loso_runs(
    cls: dict[str, Any], loso: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], str]:
    """The LOSO rows of the shipped recipe: the manifest's ``loso_rows`` (an experiment's
    variant, e.g. 2.1.0 = ``tail-cut``/``cut6``), else the main runs of its init."""
    pick = cls["extra"].get("loso_rows")
    if pick and loso:
        exp = next((e for e in loso.get("experiments", []) if e["name"] == pick["experiment"]), {})
        runs = [r for r in exp.get("runs", []) if r.get("variant") == pick["variant"]]
        return runs, f"; experiment `{pick['experiment']}`, variant `{pick['variant']}`"
    shipped = cls["extra"]["init"]
    return [r for r in (loso or {}).get("runs", []) if r["init"] == shipped], ""


def _points(cls: dict[str, Any]) -> str:
    points = cls.get("operating_points") or {}
    val = cls["extra"].get("operating_points_validation", {})
    rows = [
        [
            pop,
            f"{p['threshold']:.4f}",
            f"[{p['band'][0]:.4f}, {p['band'][1]:.4f}]",
            # finalize_classifier writes validation_*, `training operating-points` plain keys
            _fmt(
                val.get(pop, {}).get("validation_sensitivity", val.get(pop, {}).get("sensitivity"))
            ),
            _fmt(
                val.get(pop, {}).get("validation_specificity", val.get(pop, {}).get("specificity"))
            ),
            p.get("basis", ""),
        ]
        for pop, p in points.items()
    ]
    return _table(
        ["population", "threshold", "borderline band", "val sens", "val spec", "basis"], rows
    )


SEG_STRUCTURES = ("right_lung", "left_lung", "heart_mediastinum", "lungs")


def _seg_cell(per: dict[str, dict[str, float]], name: str, key: str, fmt: str) -> str:
    value = per.get(name, {}).get(key)
    return "—" if value is None else format(value, fmt)


def _seg_table(
    metrics: dict[str, dict[str, dict[str, float]]],
    previous: dict[str, dict[str, dict[str, float]]] | None = None,
) -> list[str]:
    """One row per (source, structure): n, Dice and HD95 of this model and of the previous one."""
    old = previous or {}
    lines = [
        "| source | structure | n | Dice | Dice (previous) | HD95 px (% diag) "
        "| HD95 px (previous) |",
        "|---|---|---|---|---|---|---|",
    ]
    for src, per in sorted(metrics.items()):
        for name in (n for n in SEG_STRUCTURES if n in per):
            before = old.get(src, {})
            hd = f"{per[name]['hd95_px']:.1f} ({per[name]['hd95_pct_diag']:.2f} %)"
            lines.append(
                f"| {src} | {name} | {per[name]['n']} | {per[name]['dice']:.3f} | "
                f"{_seg_cell(before, name, 'dice', '.3f')} | {hd} | "
                f"{_seg_cell(before, name, 'hd95_px', '.1f')} |"
            )
    return lines


def _table(header: list[str], rows: list[list[Any]]) -> str:
    """Markdown table, or a note when the comparison was not run."""
    if not rows:
        return "_not run in this build_"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def write_model_card(weights: Path, work: Path) -> Path:
    """Write MODEL_CARD.md; sections whose inputs are missing say so (no invented numbers)."""
    cls = _load(weights / "classifier.manifest.json")
    seg = _load(weights / "segmenter.manifest.json")
    inits = _load(weights / "init_comparison.json") or _load(work / "compare" / "inits.json")
    archs = _load(weights / "architecture_comparison.json") or _load(
        work / "compare" / "architectures.json"
    )
    loso = _load(weights / "loso.json")
    parts_loso = _loso_table(loso)
    times = _load(work / "retrain_times.json")
    times_note = "python -m training all"
    if times is None:
        times = _load(weights / "step_times.json")
        times_note = "steps run separately; see step_times.json"
    template = (Path(__file__).parent / "MODEL_CARD.template.md").read_text(encoding="utf-8")
    parts: dict[str, str] = {}
    if cls:
        ex = cls["extra"]
        parts["cls_test"] = "\n".join(_cls_table(ex["metrics"]["test"]))
        parts["cls_val"] = "\n".join(_cls_table(ex["metrics"]["validation"]))
        parts["temperature"] = f"{cls['temperature']:.3f}"
        parts["threshold"] = f"{cls['threshold']:.4f}"
        parts["op_points"] = _points(cls)
        parts["goals"] = _goals(cls, loso)
        parts["sampler"] = "```\n" + json.dumps(ex.get("sampler", {}), indent=1) + "\n```"
        parts["cls_recipe"] = json.dumps(ex["training_config"])
        choice = ex.get("architecture_choice", {})
        parts["arch_choice"] = (
            f"shipped `{choice.get('chosen', ex['init'])}`. Criterion: "
            f"{choice.get('criterion', 'n/a')}. {choice.get('note', '')}"
        )
        parts["cls_recipe_note"] = ex.get("recipe", "frozen trunk, last stage trained")
        parts["youden"] = f"{ex['youden_threshold']:.4f}"
        parts["cls_arch"] = ex["architecture"]
        parts["cls_init"] = ex["init"]
        parts["cls_wall"] = f"{ex['training_wall_s'] / 60:.1f}"
        parts["data_summary"] = "\n".join(
            f"| {split} | "
            + ", ".join(
                f"{s}: {v['n']} ({v['positive']} pos)" for s, v in d["classification"].items()
            )
            + " | "
            + ", ".join(f"{s}: {n}" for s, n in d["segmentation"].items())
            + " |"
            for split, d in ex["training_data"].items()
        )
        parts["sources"] = "\n".join(
            f"| {s['source']} | {s['citation']} | {s['licence']} | {', '.join(s['used_for'])} |"
            for s in ex["data_sources"]
        )
        parts["command"] = ex["training_command"]
        parts["seed"] = str(ex["seed"])
    if seg:
        ex = seg["extra"]
        before = ex.get("previous", {}).get("metrics", {})
        parts["seg_test"] = "\n".join(_seg_table(ex["metrics_dice"]["test"], before.get("test")))
        parts["seg_val"] = "\n".join(_seg_table(ex["metrics_dice"]["val"], before.get("val")))
        parts["seg_previous"] = ex.get("previous", {}).get("architecture", "none recorded")
        tc = ex["training_config"]
        parts["seg_run"] = (
            f"stage 1 {tc['head_epochs']} epoch(s) at batch {tc['head_batch']}, stage 2 "
            f"{ex.get('finetune_steps_run', 0)} end-to-end step(s) of {tc['finetune_batch']}, "
            f"{ex['training_wall_s'] / 60:.0f} min wall, command `{ex['training_command']}`"
        )
        parts["seg_shares"] = ", ".join(
            f"{name} {share:.0%}" for name, share in ex["training_config"]["source_shares"]
        )
        parts["seg_arch"] = ex["architecture"]
        parts["seg_size"] = str(seg["input"]["size"])
        parts["seg_wall"] = f"{ex['training_wall_s'] / 60:.1f}"
    parts["inits"] = _table(
        ["initialisation", "validation AUROC", "train images", "epochs", "wall (s)"],
        [
            [r["init"], f"{r['val_auroc']:.4f}", r["n_train"], r["epochs"], f"{r['wall_s']:.0f}"]
            for r in inits or []
        ],
    )
    parts["archs"] = _table(
        [
            "architecture",
            "init",
            "params (M)",
            "GFLOPs @224",
            "ORT CPU latency (ms, bs 1, 1 thread)",
            "validation AUROC",
            "train px",
            "images seen in budget",
        ],
        [
            [
                r["architecture"],
                r["init"],
                f"{r['params_m']:.2f}",
                f"{r['gflops_224']:.2f}",
                f"{r['ort_latency_ms']:.1f}",
                f"{r['val_auroc']:.4f}",
                r["train_px"],
                r["train_images_seen"],
            ]
            for r in archs or []
        ],
    )
    parts["input_gate"] = input_gate_section(weights)
    parts["calibration_study"] = calibration_section(weights)
    parts["label_audit"] = label_audit_section(weights)
    parts["seg_loso"] = seg_loso_section(weights)
    parts["loso"] = parts_loso
    parts["times_note"] = times_note
    parts["times"] = (
        (", ".join(f"{k} {v / 60:.1f} min" for k, v in times.items()))
        if times
        else "_not recorded_"
    )
    text = template
    for key, value in parts.items():
        text = text.replace("{{" + key + "}}", value)
    out = weights / "MODEL_CARD.md"
    out.write_text(text, encoding="utf-8")
    return out
