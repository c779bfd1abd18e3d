"""Command line: ``python -m training <step> [options]``.

Steps: ``prepare`` (integrate, deduplicate, split, cache), ``classifier``, ``segmenter``,
``all`` (the documented retrain: prepare + both models + export + manifests), ``figure``
(label distribution), ``compare`` (architecture comparison), ``init-compare`` (classifier
initialisations), ``card`` (MODEL_CARD.md from the manifests), ``refresh-sha`` (recompute
manifest sha256 after replacing an ONNX file).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

DEFAULT_SEED = 20260228


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "step",
        choices=[
            "prepare",
            "classifier",
            "segmenter",
            "all",
            "figure",
            "compare",
            "init-compare",
            "card",
            "refresh-sha",
        ],
    )
    p.add_argument(
        "--data", type=Path, default=Path("../shared/data/cxr"), help="shared data folder"
    )
    p.add_argument(
        "--nih", type=Path, default=None, help="optional NIH ChestX-ray14 folder (native layout)"
    )
    p.add_argument(
        "--chexpert", type=Path, default=None, help="optional CheXpert-v1.0-small folder"
    )
    p.add_argument("--chexpert-uncertain", choices=["ignore", "ones", "zeros"], default="ignore")
    p.add_argument(
        "--work", type=Path, default=Path("runs"), help="scratch folder (caches, checkpoints, logs)"
    )
    p.add_argument(
        "--weights", type=Path, default=Path("weights"), help="where artifacts are written"
    )
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--epochs", type=int, default=None, help="override the step's default epochs")
    p.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="per-run time budget for compare steps; segmenter: wall-time cap of its fine-tuning",
    )
    p.add_argument(
        "--finetune-steps",
        type=int,
        default=None,
        help="segmenter: end-to-end fine-tuning batches after the decoder stage (0 skips it)",
    )
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    return p


def _prepare(args: argparse.Namespace, command: str) -> None:
    from training.prepare import prepare
    from training.sources import extra_records

    extra = extra_records(args.nih, args.chexpert, args.chexpert_uncertain)
    prepare(args.data, args.work / "cache", args.seed, extra)


def _classifier(args: argparse.Namespace, command: str) -> None:
    from training.classifier import ClassifierConfig
    from training.models import ClassifierInit
    from training.pipeline import run_classifier

    cfg = ClassifierConfig(seed=args.seed)
    if args.epochs:
        cfg = replace(cfg, epochs=args.epochs)
    run_classifier(args.work / "cache", args.work, args.weights, ClassifierInit.LITE0, cfg, command)


def _segmenter(args: argparse.Namespace, command: str) -> None:
    from training.pipeline import run_segmenter
    from training.segmenter import SegmenterConfig

    cfg = SegmenterConfig(seed=args.seed)
    if args.epochs:
        cfg = replace(cfg, head_epochs=args.epochs)
    if args.budget_s:
        cfg = replace(cfg, time_budget_s=args.budget_s)
    if args.finetune_steps is not None:
        cfg = replace(cfg, finetune_steps=args.finetune_steps)
    run_segmenter(args.work / "cache", args.work, args.weights, cfg, 256, command)


def _figure(args: argparse.Namespace, command: str) -> None:
    from training.figure import label_distribution

    label_distribution(args.work / "cache" / "images.csv", args.weights / "label_distribution.png")


def _init_compare(args: argparse.Namespace, command: str) -> None:
    from training.compare import compare_inits

    rows = compare_inits(args.work / "cache", args.work, args.seed, args.budget_s or 240.0)
    _write_json(args.weights / "init_comparison.json", rows)


def _compare(args: argparse.Namespace, command: str) -> None:
    from training.compare import (
        architecture_by_name,
        compare_architectures,
        ort_latencies,
        shipped_row,
    )

    rows = compare_architectures(args.work / "cache", args.work, args.seed, args.budget_s or 240.0)
    rows.append(shipped_row(args.weights))
    # re-measure every latency in one interleaved session, the shipped model included
    nets = {r["architecture"]: architecture_by_name(r["architecture"]) for r in rows}
    for row, latency in zip(rows, ort_latencies(nets).values(), strict=True):
        row["ort_latency_ms"] = latency
    _write_json(args.weights / "architecture_comparison.json", rows)


def _card(args: argparse.Namespace, command: str) -> None:
    from training.model_card import write_model_card

    write_model_card(args.weights, args.work)


def _refresh_sha(args: argparse.Namespace, command: str) -> None:
    from training.export import refresh_sha256

    for manifest in sorted(args.weights.glob("*.manifest.json")):
        refresh_sha256(manifest)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


Step = Callable[[argparse.Namespace, str], None]
STEPS: dict[str, Step] = {
    "prepare": _prepare,
    "classifier": _classifier,
    "segmenter": _segmenter,
    "figure": _figure,
    "init-compare": _init_compare,
    "compare": _compare,
    "card": _card,
    "refresh-sha": _refresh_sha,
}
ALL = ("prepare", "classifier", "segmenter", "figure", "card")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    command = "python -m training " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    if args.step != "all":
        STEPS[args.step](args, command)
        return 0
    times: dict[str, float] = {}
    for name in ALL:
        start = time.monotonic()
        STEPS[name](args, command)
        times[name] = time.monotonic() - start
    times["total"] = sum(times.values())
    _write_json(args.work / "retrain_times.json", times)
    _card(args, command)  # again, now with the step times
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
