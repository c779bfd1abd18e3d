"""Command line: ``python -m training <step> [options]``.

Steps: ``prepare`` (integrate, deduplicate, split, cache), ``loso`` (leave-one-source-out
evaluation of the classifier recipe, B0 vs Lite0), ``classifier`` (end-to-end fine-tuning,
calibration, export), ``segmenter``, ``all`` (the documented retrain: prepare + LOSO + both
models + export + manifests), ``figure``
(label distribution), ``compare`` (architecture comparison), ``init-compare`` (classifier
initialisations), ``card`` (MODEL_CARD.md from the manifests), ``refresh-sha`` (recompute
manifest sha256 after replacing an ONNX file), ``reexport`` (re-export the classifier from its
checkpoint with the current graph, e.g. to add ``gate_features``; logits checked), ``gate``
(fit and evaluate the learned input gate for the current classifier.onnx), ``operating-points``
(adult / pediatric thresholds and bands of the current classifier from the validation split),
``recalibrate --labels CSV --images DIR`` (a site calibration file from local labelled images),
``calibration-study`` (one temperature vs one per population, and what a site recalibration
buys per adult source; writes ``weights/calibration_study.json``), ``label-audit`` (what the NIH
and JSRT labels let any model reach: NIH's text-mined labels against radiologists' reads; writes
``weights/label_audit.json``; ``--labels`` overrides the relabelling file of the torchxrayvision
wheel), ``seg-loso`` (the segmenter recipe trained without a mask source and scored on it:
Dice at an unseen hospital; ``--folds jsrt covidqu ...``; writes ``weights/seg_loso.json``).
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
from typing import TYPE_CHECKING, Any

from training.finetune import FinetuneConfig
from training.loso import BASELINE_VARIANT
from training.models import ClassifierInit
from training.tailtune import TailConfig

if TYPE_CHECKING:
    from training.segmenter import SegmenterConfig

DEFAULT_SEED = 20260228
# The end-to-end recipe (``--recipe e2e``) and its LOSO protocol, as run for the model card's
# comparison (not shipped: lower LOSO AUROC than the cached-trunk recipe on covidqu, and its
# features no longer separate non-radiographs for the input gate; see the card).
# Measured on the idle 2-core machine: B0 trains at ~19 images/s at 224 px, Lite0 at ~20
# (bench/bench_train_step.py), so a LOSO run (2 x 4,096 images) takes ~7 min and the final run
# (4 x 4,096) ~15 min.
FINAL = FinetuneConfig(
    seed=DEFAULT_SEED, init=ClassifierInit.LITE0_TRANSPLANT.value, epochs=4, samples_per_epoch=4096
)
# time_budget_s is a safety cap far above the ~7 min a fold takes on the idle machine: a run cut
# by it would not be the recipe (a loaded machine once cut a fold at step 208/256)
LOSO = FinetuneConfig(
    seed=DEFAULT_SEED, size=224, epochs=2, samples_per_epoch=4096, time_budget_s=3000.0
)
# The shipped recipe (classifier 2.1.0, experiment tail-cut in loso.json): stages 0-5 cached,
# stages 6-7 + head conv + head trained (~8-22 images/s on the shared machine; 2.0.0 was cut 7,
# ~36 images/s). time_budget_s is a safety cap: the 2.1.0 run took 13.2 min for its 256 steps.
TAIL = TailConfig(
    base=FinetuneConfig(
        seed=DEFAULT_SEED,
        init=ClassifierInit.LITE0.value,
        epochs=4,
        samples_per_epoch=4096,
        batch_size=64,
        time_budget_s=3000.0,
    ),
    cut=6,
    n_aug=1,
    # the augmented view of the cached stages ran at ~5 images/s on the loaded machine: it
    # covers the training rows reached in this budget, the rest train on their clean view
    aug_budget_s=900.0,
)
# LOSO folds: half the final run's samples per fold; the cap again only a safety net (tail-cut's
# cut-6 folds took 7-19 min on the shared machine; a 300 s cap would stop them early)
TAIL_LOSO = replace(TAIL, base=replace(TAIL.base, epochs=2))
TAIL_LOSO_INITS = (ClassifierInit.LITE0.value,)
# the cut points the tail recipe supports: the trunk cache is built at LOWER_CUT (6) and cut 7
# derives from it (training.loso.trunk_for)
TAIL_CUTS = (6, 7)
LOSO_INITS = (ClassifierInit.LITE0_TRANSPLANT.value, ClassifierInit.LITE0.value)
LOSO_MAX_EVAL = 800


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
            "loso",
            "classifier",
            "segmenter",
            "all",
            "figure",
            "compare",
            "init-compare",
            "card",
            "refresh-sha",
            "reexport",
            "gate",
            "operating-points",
            "recalibrate",
            "calibration-study",
            "label-audit",
            "seg-loso",
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
    p.add_argument(
        "--init",
        default=ClassifierInit.LITE0.value,
        choices=[i.value for i in ClassifierInit],
        help="classifier initialisation / architecture",
    )
    p.add_argument(
        "--recipe",
        choices=["tail", "e2e"],
        default="tail",
        help="classifier recipe: 'tail' (cached lower trunk, upper blocks trained; the shipped "
        "recipe: it won leave-one-source-out, see the model card) or 'e2e' (every stage "
        "fine-tuned; pass --init b0-lite0-transplant for the B0 run compared there)",
    )
    p.add_argument(
        "--aug-budget-s",
        type=float,
        default=None,
        help="tail recipe: seconds for the augmented trunk views (default in TAIL)",
    )
    p.add_argument(
        "--cut",
        type=int,
        choices=TAIL_CUTS,
        default=None,
        help="tail recipe: first trained stage (default 7 as shipped: stages 0-6 cached, 7 + head "
        "conv + head trained; 6: stage 6 trained too, stages 0-5 cached)",
    )
    p.add_argument(
        "--experiment",
        default=None,
        help="loso (tail): record the runs as this named experiment in loso.json (the shipped "
        "LOSO runs stay untouched); pairs with --variant",
    )
    p.add_argument(
        "--variant",
        default=BASELINE_VARIANT,
        help=f"loso --experiment: name of this configuration; paired AUROC differences are "
        f"against the variant '{BASELINE_VARIANT}' on the same held-out images",
    )
    p.add_argument("--size", type=int, default=None, help="classifier training input side")
    p.add_argument("--samples", type=int, default=None, help="classifier samples per epoch")
    p.add_argument(
        "--inits",
        nargs="+",
        default=None,
        help="architectures compared by LOSO (default: lite0 for 'tail', B0 and Lite0 for 'e2e')",
    )
    p.add_argument(
        "--folds",
        nargs="+",
        default=None,
        help="LOSO folds ('+' joins sources held out together), default: all",
    )
    p.add_argument(
        "--exclude-families",
        nargs="+",
        default=None,
        help="finding families left out of classifier training (e.g. covid)",
    )
    p.add_argument(
        "--previous-manifest",
        type=Path,
        default=None,
        help="loso: instead of training, score this exported classifier on the folds' rows",
    )
    p.add_argument(
        "--max-eval", type=int, default=LOSO_MAX_EVAL, help="LOSO images scored per source"
    )
    p.add_argument(
        "--evaluate-only",
        action="store_true",
        help="gate: re-evaluate the fitted gate (rules changed) without refitting it; seg-loso: "
        "re-score each fold's saved model (e.g. after a cache fix) without retraining it",
    )
    p.add_argument(
        "--gate-train-images",
        type=int,
        default=1200,
        help="gate: training radiographs (each with its 5 generated variants)",
    )
    r = p.add_argument_group("recalibrate (site temperature and thresholds)")
    r.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="CSV: image, label[, patient_id][, population | age]; label-audit: the 2019 "
        "relabelling file (default: the torchxrayvision wheel's)",
    )
    r.add_argument("--images", type=Path, default=None, help="folder the CSV's paths are in")
    r.add_argument("--out", type=Path, default=Path("site_calibration.json"))
    r.add_argument(
        "--calibration-id", default=None, help="id named in /version (default: site-<hash>)"
    )
    r.add_argument("--sensitivity", type=float, default=0.90, help="target sensitivity")
    r.add_argument("--min-per-class", type=int, default=30, help="refuse below this many cases")
    r.add_argument(
        "--method",
        choices=("temperature", "platt"),
        default="temperature",
        help="temperature: sigmoid(logit / T); platt: also an offset, sigmoid(logit / T + b), "
        "for a site whose prevalence shifts every score",
    )
    r.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        help="bootstrap resamples for CIs (recalibrate, calibration-study, label-audit)",
    )
    return p


def _prepare(args: argparse.Namespace, command: str) -> None:
    from training.prepare import prepare
    from training.sources import extra_records

    extra = extra_records(args.nih, args.chexpert, args.chexpert_uncertain)
    prepare(args.data, args.work / "cache", args.seed, extra)


def _overrides(cfg: FinetuneConfig, args: argparse.Namespace) -> FinetuneConfig:
    cfg = replace(cfg, seed=args.seed)
    if args.epochs:
        cfg = replace(cfg, epochs=args.epochs)
    if args.size:
        cfg = replace(cfg, size=args.size)
    if args.samples:
        cfg = replace(cfg, samples_per_epoch=args.samples)
    if args.budget_s:
        cfg = replace(cfg, time_budget_s=args.budget_s)
    if args.exclude_families:
        cfg = replace(cfg, exclude_families=tuple(args.exclude_families))
    return cfg


def _tail(cfg: TailConfig, args: argparse.Namespace) -> TailConfig:
    """``cfg`` with the command line's overrides (schedule, augmented-view budget, cut)."""
    cfg = replace(cfg, base=_overrides(cfg.base, args))
    if args.aug_budget_s is not None:
        cfg = replace(cfg, aug_budget_s=args.aug_budget_s)
    if args.cut is not None:
        cfg = replace(cfg, cut=args.cut)
    return cfg


def _classifier(args: argparse.Namespace, command: str) -> None:
    from training.pipeline import run_classifier, run_classifier_tail

    if args.recipe == "e2e":
        cfg = replace(_overrides(FINAL, args), init=args.init)
        run_classifier(args.work / "cache", args.work, args.weights, cfg, command)
        return
    tail = _tail(replace(TAIL, base=replace(TAIL.base, init=args.init)), args)
    run_classifier_tail(args.work / "cache", args.work, args.weights, tail, command)


def _previous(args: argparse.Namespace, out: Path, folds: list[tuple[str, ...]], seed: int) -> None:
    """Score a previous release on the LOSO folds' held-out rows (kept in ``loso.json``)."""
    from training.loso import score_release

    result = json.loads(out.read_text(encoding="utf-8")) if out.exists() else {"runs": []}
    result["previous_release"] = score_release(
        args.previous_manifest, args.work / "cache", folds, args.max_eval, seed
    )
    _write_json(out, result)


def _loso(args: argparse.Namespace, command: str) -> None:
    from training.loso import FOLDS, Experiment, run_loso, run_loso_tail

    folds = [tuple(f.split("+")) for f in args.folds] if args.folds else list(FOLDS)
    out = args.weights / "loso.json"
    if args.recipe == "e2e":
        inits = args.inits or list(LOSO_INITS)
        run_loso(
            args.work / "cache", args.work, out, inits, folds, _overrides(LOSO, args), args.max_eval
        )
    else:
        inits = args.inits or list(TAIL_LOSO_INITS)
        tail = _tail(TAIL_LOSO, args)
        if args.previous_manifest is not None:
            _previous(args, out, folds, tail.base.seed)
            return
        experiment = (
            None if args.experiment is None else Experiment(args.experiment, args.variant, command)
        )
        run_loso_tail(
            args.work / "cache", args.work, out, inits, folds, tail, args.max_eval, experiment
        )


def _segmenter_config(args: argparse.Namespace) -> SegmenterConfig:
    from training.segmenter import SegmenterConfig

    cfg = SegmenterConfig(seed=args.seed)
    if args.epochs:
        cfg = replace(cfg, head_epochs=args.epochs)
    if args.budget_s:
        cfg = replace(cfg, time_budget_s=args.budget_s)
    if args.finetune_steps is not None:
        cfg = replace(cfg, finetune_steps=args.finetune_steps)
    return cfg


def _segmenter(args: argparse.Namespace, command: str) -> None:
    from training.pipeline import run_segmenter

    run_segmenter(
        args.work / "cache", args.work, args.weights, _segmenter_config(args), 256, command
    )


def _seg_loso(args: argparse.Namespace, command: str) -> None:
    from training.seg_loso import FOLDS, run_seg_loso

    print(
        run_seg_loso(
            args.work / "cache",
            args.work,
            args.weights,
            _segmenter_config(args),
            args.folds or list(FOLDS),
            command,
            evaluate_only=args.evaluate_only,
        )
    )


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


def _gate(args: argparse.Namespace, command: str) -> None:
    from training.gate import GateConfig, reevaluate, run_gate

    step = reevaluate if args.evaluate_only else run_gate
    cfg = GateConfig(seed=args.seed, n_train=args.gate_train_images)
    step(args.work / "cache", args.weights, cfg, command, args.threads)


def _operating_points(args: argparse.Namespace, command: str) -> None:
    from training.operating_points import run_operating_points

    run_operating_points(args.work / "cache", args.weights, args.threads, command)


def _recalibrate(args: argparse.Namespace, command: str) -> None:
    from training.recalibrate import RecalibrationConfig, recalibrate

    if args.labels is None or args.images is None:
        raise SystemExit("recalibrate needs --labels CSV and --images DIR")
    cfg = RecalibrationConfig(
        sensitivity=args.sensitivity,
        min_per_class=args.min_per_class,
        bootstrap=args.bootstrap,
        seed=args.seed,
        method=args.method,
    )
    out = recalibrate(
        args.labels, args.images, args.weights, args.out, args.calibration_id, cfg, command
    )
    print(out)


def _calibration_study(args: argparse.Namespace, command: str) -> None:
    from training.calibration_study import StudyConfig, run_calibration_study
    from training.recalibrate import RecalibrationConfig

    site = RecalibrationConfig(
        sensitivity=args.sensitivity,
        min_per_class=args.min_per_class,
        bootstrap=args.bootstrap,
        seed=args.seed,
    )
    cfg = StudyConfig(bootstrap=args.bootstrap, seed=args.seed, site=site)
    print(run_calibration_study(args.work / "cache", args.weights, args.work, cfg, command))


def _label_audit(args: argparse.Namespace, command: str) -> None:
    from training.label_audit import run_label_audit

    print(
        run_label_audit(
            args.data,
            args.work / "cache",
            args.weights,
            args.work,
            args.labels,
            args.bootstrap,
            args.seed,
            command,
        )
    )


def _card(args: argparse.Namespace, command: str) -> None:
    from training.model_card import write_model_card

    write_model_card(args.weights, args.work)


def _refresh_sha(args: argparse.Namespace, command: str) -> None:
    from training.export import refresh_sha256

    for manifest in sorted(args.weights.glob("*.manifest.json")):
        refresh_sha256(manifest)


def _reexport(args: argparse.Namespace, command: str) -> None:
    from training.pipeline import reexport_classifier

    reexport_classifier(args.work / "cache", args.work, args.weights, command)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


Step = Callable[[argparse.Namespace, str], None]
STEPS: dict[str, Step] = {
    "prepare": _prepare,
    "loso": _loso,
    "classifier": _classifier,
    "segmenter": _segmenter,
    "figure": _figure,
    "init-compare": _init_compare,
    "compare": _compare,
    "card": _card,
    "refresh-sha": _refresh_sha,
    "reexport": _reexport,
    "gate": _gate,
    "operating-points": _operating_points,
    "recalibrate": _recalibrate,
    "calibration-study": _calibration_study,
    "label-audit": _label_audit,
    "seg-loso": _seg_loso,
}
ALL = ("prepare", "loso", "classifier", "segmenter", "gate", "figure", "card")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        import torch
    except ImportError:  # gate / recalibrate run on a serving install (ONNX Runtime only)
        torch = None
    if torch is not None:
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
