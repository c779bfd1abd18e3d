"""MODEL_CARD.md sections for the input gate and the operating points (from the manifests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def input_gate_section(weights: Path) -> str:
    gate = _load(weights / "input_gate.manifest.json")
    if not gate or "metrics" not in gate:
        return "_The learned gate was not fitted in this build (`python -m training gate`)._"
    m, f = gate["metrics"], gate["fitted"]
    output = gate.get("features_output", "features")
    scored = (
        "`gate_features` (per-channel mean and standard deviation over the grid of the last "
        "frozen block's activations: ImageNet weights, not fine-tuned)"
        if output == "gate_features"
        else "average-pooled `features` (the last conv block)"
    )
    lines = [
        f"Scores the classifier output {scored}.",
        "",
        f"Fitted by `{f['command']}` for {f['classifier']} (sha256 "
        f"`{gate['classifier_sha256'][:12]}…`): {f['n_train_images']} training radiographs and "
        f"their {', '.join(v for v in f['variants'] if v != 'upright')} variants, rank "
        f"{f['rank']}, Ledoit-Wolf shrinkage {f['ledoit_wolf_shrinkage']:.3f}; refusal threshold "
        f"{gate['threshold']:.3f} = the {f['reject_quantile']} quantile of the upright validation "
        f"scores ({m['validation']['rejected_by_score']} of {m['validation']['n']} validation "
        f"radiographs above it). Fit time {f['fit_seconds']:.0f} s.",
        "",
        "Real radiographs of the internal test split, through the serving path (rules + score):",
        "",
        "| source | n | refused | rate | flagged |",
        "|---|---|---|---|---|",
    ]
    for src, r in m["real_test"].items():
        rate, flagged = _pct(r["rate"]), _pct(r["flagged_rate"])
        lines.append(f"| {src} | {r['n']} | {r['rejected']} | {rate} | {flagged} |")
    lines += ["", "Generated non-radiographs (`training/hostile.py`, must all be refused):", ""]
    lines += ["| category | n | refused | rate |", "|---|---|---|---|"]
    for cat, r in m["hostile"].items():
        lines.append(f"| {cat} | {r['n']} | {r['rejected']} | {_pct(r['rate'])} |")
    if m.get("hostile_accepted"):
        lines += ["", "Accepted (gate misses): " + ", ".join(m["hostile_accepted"])]
    lines += [
        "",
        "Suspicious but plausible variants of test radiographs (scaled to 512 px; answered, "
        "and flagged when the gate recognises them):",
        "",
        "| variant | n | answered | flagged as expected |",
        "|---|---|---|---|",
    ]
    for kind, r in m["suspicious"].items():
        lines.append(
            f"| {kind} | {r['n']} | {_pct(r['accepted_rate'])} | {_pct(r['flagged_rate'])} |"
        )
    g = m["gate_ms"]
    lines += [
        "",
        "Gate cost per image (rules + score, on top of the classifier pass): "
        f"p50 {g['p50']:.2f} ms, p95 {g['p95']:.2f} ms (2 shared cores). Lateral views: no "
        "real laterals exist in the "
        "shared data; the `lateral_view` flag is learned from half-chest crops of frontal films "
        "and is unvalidated on true laterals.",
    ]
    return "\n".join(lines)


def _with_ci(r: dict[str, Any], key: str) -> str:
    if r.get(key) is None:
        return "—"
    lo, hi = r[f"{key}_ci95"]
    return f"{r[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def operating_points_section(weights: Path) -> str:
    cls = _load(weights / "classifier.manifest.json")
    if not cls or "operating_points" not in cls:
        return "_No population operating points in the manifest: one threshold for everyone._"
    lines = [
        f"Default population: {cls.get('default_population', 'adult')}. Probabilities inside "
        "the band are answered `indeterminate`.",
        "",
        "| population | threshold | band | sensitivity [95 % CI] | specificity [95 % CI] | basis |",
        "|---|---|---|---|---|---|",
    ]
    report = cls.get("extra", {}).get("operating_points_validation", {})
    for pop, p in cls["operating_points"].items():
        r = report.get(pop, {})
        sens, spec = _with_ci(r, "sensitivity"), _with_ci(r, "specificity")
        lo, hi = p["band"]
        lines.append(
            f"| {pop} | {p['threshold']:.4f} | [{lo:.4f}, {hi:.4f}] | {sens} | {spec} "
            f"| {p.get('basis', '')} |"
        )
    return "\n".join(lines)
