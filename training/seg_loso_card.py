"""MODEL_CARD.md section for the segmenter's held-out-source runs (``weights/seg_loso.json``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.card_json import card_section

STRUCTURES = ("lungs", "right_lung", "left_lung", "heart_mediastinum")


def _cell(m: dict[str, Any] | None, hd: bool = True) -> str:
    if not m:
        return "—"
    return f"{m['dice']:.3f} / {m['hd95_px']:.1f}" if hd else f"{m['dice']:.3f}"


def _rows(fold: dict[str, Any]) -> list[str]:
    lines = []
    every = fold["held_out_model"]["all"]
    test = fold["held_out_model"]["test"]
    shipped = fold["shipped_model_test"]
    for source in sorted(every):
        for name in STRUCTURES:
            m = every[source].get(name)
            if m is None:
                continue
            t, s = test.get(source, {}).get(name), shipped.get(source, {}).get(name)
            n_test = t["n"] if t else 0
            lines.append(
                f"| {'+'.join(fold['held_out'])} | {source} | {name} | {m['n']} | {_cell(m)} "
                f"| {n_test} | {_cell(t, hd=False)} | {_cell(s, hd=False)} |"
            )
    return lines


def seg_loso_section(weights: Path) -> str:
    what = "The segmenter's held-out-source evaluation was"
    return card_section(weights, "seg_loso.json", what, "seg-loso", _render)


def _render(doc: dict[str, Any]) -> str:
    lines = [
        "| held out | scored | structure | n (all its images) | held-out model: Dice / HD95 px "
        "| n (its test split) | held-out model: Dice | shipped model: Dice |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for fold in doc["folds"]:
        lines += _rows(fold)
    runs = "; ".join(
        f"{'+'.join(f['held_out'])}: {f['train_images']} training images, stage 1 "
        f"{f['config']['head_epochs']} epoch(s) + {f['finetune_steps_run']} end-to-end "
        f"steps, {f['wall_s'] / 60:.1f} min; shipped model scored: {f['shipped']}"
        for f in doc["folds"]
    )
    commands = "; ".join(
        sorted({f"`{c}`" for f in doc["folds"] for c in (f["command"], f.get("rescored_by")) if c})
    )
    lines += [
        "",
        "Each fold trains the shipped recipe (same seed, stages and steps) without the held-out "
        "mask source (its sampling share goes to the others) and scores every one of its "
        "images, as `/segment` would (serving post-processing). The last two columns compare "
        "on that source's internal test images: the shipped model was trained with the "
        f"source's training images, the held-out model never saw the source. Runs: {runs}. "
        f"Commands: {commands}.",
    ]
    return "\n".join(lines)
