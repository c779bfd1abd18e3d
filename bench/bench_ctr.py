"""Validate the cardiothoracic ratio: our predicted masks vs the human JSRT/SCR masks.

    python bench/bench_ctr.py --table runs/cache/images.csv [--splits test] [--json OUT]

For every JSRT image of the chosen splits (the segmenter never trained on them; the split comes
from the prepared table of ``python -m training prepare``), the CTR is computed twice with the
same definition (:func:`inference.measure.measure_chest`): once from the shipped segmenter's
masks, once from the SCR database's human right-lung, left-lung and heart masks. Prints the
mean and max absolute error, the bias, and how often the reliability flag and the "normal
below 0.5" call agree. Needs weights/ and ../shared/data/cxr.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from inference.anatomy import segment  # noqa: E402
from inference.measure import measure_chest  # noqa: E402
from inference.sessions import RuntimeOptions, load_verified_model  # noqa: E402
from training.prepare import NEGATIVE_SOURCES  # noqa: E402

SHARED = REPO.parent / "shared" / "data" / "cxr"


def _mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    img = Image.open(path).convert("L")
    if img.size != (shape[1], shape[0]):
        img = img.resize((shape[1], shape[0]), Image.Resampling.NEAREST)
    return np.asarray(img) > 127


def _human_masks(data: Path) -> dict[str, dict[str, Path]]:
    out: dict[str, dict[str, Path]] = {}
    with (data / "segmentation.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["source"].startswith("jsrt") and row["structure"] in (
                "right_lung",
                "left_lung",
                "heart",
            ):
                out.setdefault(row["image"], {})[row["structure"]] = data / row["mask"]
    return out


def _split_images(table: Path, data: Path, splits: set[str]) -> list[str]:
    """JSRT images of ``splits``, as paths relative to ``data`` (the table may hold absolute
    paths)."""
    root = data.resolve()
    with table.open(newline="", encoding="utf-8") as fh:
        return [
            str(Path(r["image"]).resolve().relative_to(root))
            for r in csv.DictReader(fh)
            if r["source"] == "jsrt" and r["split"] in splits and not r["duplicate_of"]
        ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", type=Path, required=True, help="images.csv of training prepare")
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--weights", type=Path, default=REPO / "weights")
    ap.add_argument("--splits", default="test", help="comma-separated splits (default: test)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--as-stored",
        action="store_true",
        help="measure JSRT films as stored (negatives), as before 2026-12-04; default: turned "
        "positive, as a hospital sends them (training.prepare.NEGATIVE_SOURCES)",
    )
    args = ap.parse_args(argv)

    model = load_verified_model(
        args.weights / "segmenter.manifest.json", RuntimeOptions(intra_op_threads=1)
    )
    human = _human_masks(args.data)
    rows = []
    for image in _split_images(args.table, args.data, set(args.splits.split(","))):
        masks = human.get(image)
        if masks is None or len(masks) < 3:
            continue
        pixels = np.asarray(Image.open(args.data / image).convert("L"), dtype=np.float32) / 255.0
        if not args.as_stored and Path(image).parent.name in NEGATIVE_SOURCES:
            pixels = 1.0 - pixels
        shape = pixels.shape
        ref = measure_chest(*(_mask(masks[k], shape) for k in ("right_lung", "left_lung", "heart")))
        anatomy = segment(model, pixels)
        ours = measure_chest(
            anatomy.mask("right_lung"), anatomy.mask("left_lung"), anatomy.mask("heart_mediastinum")
        )
        rows.append(
            {
                "image": image,
                "ctr_human": ref.ctr,
                "ctr_ours": ours.ctr,
                "reliable_human": ref.reliable,
                "reliable_ours": ours.reliable,
                "notes_ours": list(ours.notes),
            }
        )
    pairs = [
        (r["ctr_ours"], r["ctr_human"])
        for r in rows
        if r["ctr_ours"] is not None and r["ctr_human"] is not None
    ]
    errors = [abs(a - b) for a, b in pairs]
    reliable = [
        abs(r["ctr_ours"] - r["ctr_human"])
        for r in rows
        if r["reliable_ours"] and r["ctr_human"] is not None
    ]
    same_call = sum((a < 0.5) == (b < 0.5) for a, b in pairs)
    summary = {
        "images": len(rows),
        "measured": len(pairs),
        "mae": statistics.fmean(errors) if errors else None,
        "max_error": max(errors) if errors else None,
        "bias_ours_minus_human": statistics.fmean(a - b for a, b in pairs) if pairs else None,
        "mae_reliable_only": statistics.fmean(reliable) if reliable else None,
        "reliable_ours": sum(r["reliable_ours"] for r in rows),
        "same_normal_call": same_call,
        "mean_ctr_human": statistics.fmean(b for _, b in pairs) if pairs else None,
    }
    print(
        "| splits | images | measured | MAE | max abs error | bias (ours - human) "
        "| MAE, reliable only | flagged reliable | same <0.5 call |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    s = summary
    print(
        f"| {args.splits} | {s['images']} | {s['measured']} | {s['mae']:.4f} | "
        f"{s['max_error']:.4f} | {s['bias_ours_minus_human']:+.4f} | "
        f"{s['mae_reliable_only']:.4f} | {s['reliable_ours']}/{s['images']} | "
        f"{s['same_normal_call']}/{s['measured']} |"
    )
    if args.json is not None:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
