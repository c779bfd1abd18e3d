"""Render ``weights/MODEL_CARD.md`` from the manifests and the comparison JSON files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GOALS = {"kermany": 0.975, "nih": 0.80}


def _fmt(x: Any, nd: int = 3) -> str:
    if isinstance(x, (int, float)):
        return "n/a" if x != x else f"{x:.{nd}f}"
    return str(x)


def _cls_table(metrics: dict[str, dict[str, Any]]) -> list[str]:
    header = (
        "| source | n (pos) | AUROC [95 % CI] | goal | sens @ thr | spec @ thr "
        "| sens/spec @ Youden | ECE before → after |"
    )
    lines = [
        header,
        "|---|---|---|---|---|---|---|---|",
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
            _fmt(m["sensitivity"]),
            _fmt(m["specificity"]),
            f"{_fmt(m['youden_sensitivity'])} / {_fmt(m['youden_specificity'])}",
            f"{_fmt(m['ece_uncalibrated'])} → {_fmt(m['ece_calibrated'])}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


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
