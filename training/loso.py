"""Leave-one-source-out (LOSO) evaluation: the model-selection criterion since issue 9.

For each held-out fold the recipe is trained on the training split of every *other* source and
scored on all kept images of the held-out source(s) (train, val and test rows: none was seen).
Single-class sources cannot give an AUROC alone, so they are held out together with a source
of the opposite class: ``covid19rad`` (all "no finding") with ``ieee8023`` (almost all findings)
— one model never saw either; the fold reports the pooled AUROC, ieee8023's own AUROC (17
negatives: wide CI) and covid19rad's specificity at the fold's adult threshold.

Architectures are compared on the *same* held-out images: the per-fold AUROC difference gets a
paired bootstrap CI (the same resampled images for both models).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from training.dataset import ClsSplit, cls_split
from training.evaluate import population_points
from training.finetune import FinetuneConfig, finetune, predict_logits
from training.metrics import at_threshold, auroc, bootstrap_auroc_ci, fit_temperature, sigmoid
from training.models import ClassifierInit, build_classifier
from training.tailtune import (
    TailConfig,
    TrunkCache,
    build_trunk_cache,
    derive_trunk_cache,
    tail_logits,
    train_tail,
)

LOG = logging.getLogger(__name__)
# The expensive lower stages are cached once at this boundary; higher boundaries derive from it.
LOWER_CUT = 6
FOLDS: tuple[tuple[str, ...], ...] = (
    ("covidqu",),
    ("ieee8023", "covid19rad"),
    ("nih",),
    ("jsrt",),
)
BASELINE_VARIANT = "baseline"


@dataclass(frozen=True)
class Experiment:
    """A named recipe experiment in ``loso.json``: each variant's folds, paired vs the baseline.

    Runs are kept apart from the shipped LOSO runs (``experiments[name]``, logits under
    ``work/loso/<name>/<variant>-<fold>``), so variants never overwrite each other's held-out
    logits and every difference is paired on the same held-out images.
    """

    name: str
    variant: str
    command: str
    baseline: str = BASELINE_VARIANT


def split_names(table: Path) -> npt.NDArray[np.str_]:
    """Split name of each row of :func:`all_rows` (same order)."""
    return np.concatenate(
        [np.full(len(cls_split(table, s).labels), s) for s in ("train", "val", "test")]
    )


def all_rows(table: Path) -> ClsSplit:
    """Every kept labelled classification row (train, then val, then test)."""
    parts = [cls_split(table, s) for s in ("train", "val", "test")]
    return ClsSplit(
        np.concatenate([p.index for p in parts]),
        np.concatenate([p.labels for p in parts]),
        np.concatenate([p.sources for p in parts]),
        sum((p.images for p in parts), ()),
        sum((p.findings for p in parts), ()),
        sum((p.age_groups for p in parts), ()),
    )


def capped_positions(split: ClsSplit, cap: int, seed: int) -> npt.NDArray[np.int64]:
    """Rows (sorted positions) of at most ``cap`` per source, stratified by label, seeded."""
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for source in np.unique(split.sources):
        rows = np.flatnonzero(split.sources == source)
        if len(rows) <= cap:
            keep += rows.tolist()
            continue
        for label in (0, 1):
            part = rows[split.labels[rows] == label]
            n = int(round(cap * len(part) / len(rows)))
            keep += rng.choice(part, n, replace=False).tolist()
    return np.sort(np.array(keep, dtype=np.int64))


def capped(split: ClsSplit, cap: int, seed: int) -> ClsSplit:
    """:func:`capped_positions` as a split."""
    return split.subset(capped_positions(split, cap, seed))


def paired_difference_ci(
    labels: npt.NDArray[np.int64],
    a: npt.NDArray[np.float64],
    b: npt.NDArray[np.float64],
    seed: int,
    n_boot: int = 1000,
) -> tuple[float, float, float]:
    """AUROC(a) - AUROC(b) on the same images, with a paired percentile bootstrap 95 % CI."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(labels), len(labels))
        d = auroc(labels[idx], a[idx]) - auroc(labels[idx], b[idx])
        if not np.isnan(d):
            diffs.append(d)
    point = auroc(labels, a) - auroc(labels, b)
    if not diffs:
        return point, float("nan"), float("nan")
    return point, float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))


def _fold_metrics(
    held: ClsSplit, logits: npt.NDArray[np.float64], threshold: float, temperature: float, seed: int
) -> dict[str, Any]:
    probs = sigmoid(logits / temperature)
    out: dict[str, Any] = {}
    groups = {"pooled": np.ones(len(held.labels), dtype=bool)}
    groups |= {str(s): held.sources == s for s in np.unique(held.sources)}
    for name, mask in groups.items():
        y, z = held.labels[mask], logits[mask]
        if name == "pooled" and len(groups) == 2:
            continue  # one held-out source: pooled == that source
        op = at_threshold(y, probs[mask], threshold)
        lo, hi = bootstrap_auroc_ci(y, z, seed)
        out[name] = {
            "n": int(mask.sum()),
            "n_positive": int(y.sum()),
            "auroc": auroc(y, z),
            "auroc_ci95": [lo, hi],
            "sensitivity": op.sensitivity,
            "specificity": op.specificity,
        }
    return out


def run_fold(
    cache_dir: Path,
    work: Path,
    fold: tuple[str, ...],
    cfg: FinetuneConfig,
    max_eval: int,
) -> dict[str, Any]:
    """Train without ``fold`` and score it; logits are kept for the paired comparison."""
    table = cache_dir / "images.csv"
    train_cache = np.load(cache_dir / "cls256u8.npy", mmap_mode="r")
    eval_cache = np.load(cache_dir / "cls224.npy", mmap_mode="r")
    run_dir = work / "loso" / f"{cfg.init}-{'+'.join(fold)}"
    cfg = replace(cfg, exclude_sources=fold)
    model = build_classifier(ClassifierInit(cfg.init))
    start = time.monotonic()
    run = finetune(model, cfg, train_cache, cls_split(table, "train"), run_dir)
    held_all = all_rows(table)
    held = capped(held_all.subset(np.isin(held_all.sources, fold)), max_eval, cfg.seed)
    val = cls_split(table, "val")
    val = capped(val.subset(~np.isin(val.sources, fold)), max_eval // 2, cfg.seed)
    held_logits = predict_logits(model, eval_cache, held.index, cfg.size)
    val_logits = predict_logits(model, eval_cache, val.index, cfg.size)
    temperature = fit_temperature(val.labels, val_logits)
    points = population_points(val, val_logits, temperature)
    threshold = points["adult"]["threshold"]
    np.savez(run_dir / "logits.npz", held=held_logits, index=held.index, labels=held.labels)
    row = {
        "fold": "+".join(fold),
        "init": cfg.init,
        "config": asdict(cfg),
        "train_steps": run.steps,
        "train_wall_s": run.wall_s,
        "wall_s": time.monotonic() - start,
        "adult_threshold": threshold,
        "temperature": temperature,
        "metrics": _fold_metrics(held, held_logits, threshold, temperature, cfg.seed),
    }
    LOG.info("LOSO %s %s: %s", cfg.init, row["fold"], row["metrics"])
    return row


def trunk_for(cache_dir: Path, work: Path, init: str, cfg: TailConfig) -> TrunkCache:
    """The lower-trunk cache of ``init`` over every labelled row (built once, then reused)."""
    table = cache_dir / "images.csv"
    model = build_classifier(ClassifierInit(init))
    lower_cut = min(cfg.cut, LOWER_CUT)
    lower = build_trunk_cache(
        model,
        lower_cut,
        cfg.n_aug,
        all_rows(table),
        split_names(table),
        np.load(cache_dir / "cls224.npy", mmap_mode="r"),
        np.load(cache_dir / "cls256u8.npy", mmap_mode="r"),
        work / "trunk" / f"{init}-cut{lower_cut}",
        cfg.base.seed,
        aug_budget_s=cfg.aug_budget_s,
    )
    if cfg.cut == lower_cut:
        return lower
    out = work / "trunk" / f"{init}-cut{cfg.cut}"
    return derive_trunk_cache(model, lower, lower_cut, cfg.cut, out)


def run_fold_tail(
    trunk: TrunkCache,
    work: Path,
    init: str,
    fold: tuple[str, ...],
    cfg: TailConfig,
    max_eval: int,
    run_dir: Path | None = None,
) -> dict[str, Any]:
    """Cached-trunk recipe: train the upper blocks without ``fold``, score ``fold``.

    Held-out logits go to ``run_dir`` (default ``work/loso/<init>-<fold>``).
    """
    seed = cfg.base.seed
    model = build_classifier(ClassifierInit(init))
    start = time.monotonic()
    run = train_tail(model, cfg, trunk, exclude=fold)
    rows = trunk.rows
    pos = np.arange(len(rows.labels))
    in_fold = np.isin(rows.sources, fold)
    held_pos = _capped_positions(rows, pos[in_fold], max_eval, seed)
    val_pos = _capped_positions(rows, pos[(trunk.splits == "val") & ~in_fold], max_eval, seed)
    held, val = rows.subset(held_pos), rows.subset(val_pos)
    held_logits = tail_logits(model, cfg.cut, trunk.views[0][held_pos])
    val_logits = tail_logits(model, cfg.cut, trunk.views[0][val_pos])
    temperature = fit_temperature(val.labels, val_logits)
    points = population_points(val, val_logits, temperature)
    threshold = points["adult"]["threshold"]
    run_dir = run_dir or work / "loso" / f"{init}-{'+'.join(fold)}"
    run_dir.mkdir(parents=True, exist_ok=True)
    np.savez(run_dir / "logits.npz", held=held_logits, index=held.index, labels=held.labels)
    row = {
        "fold": "+".join(fold),
        "init": init,
        "recipe": f"cached lower trunk (features[:{cfg.cut}]), upper blocks trained "
        "(training.tailtune)",
        "config": cfg.as_dict() | {"exclude_sources": list(fold)},
        "train_steps": run.steps,
        "train_wall_s": run.wall_s,
        "wall_s": time.monotonic() - start,
        "adult_threshold": threshold,
        "temperature": temperature,
        "metrics": _fold_metrics(held, held_logits, threshold, temperature, seed),
    }
    LOG.info("LOSO %s %s: %s", init, row["fold"], row["metrics"])
    return row


def _capped_positions(
    rows: ClsSplit, positions: npt.NDArray[np.int64], cap: int, seed: int
) -> npt.NDArray[np.int64]:
    return positions[capped_positions(rows.subset(positions), cap, seed)]


def run_loso_tail(
    cache_dir: Path,
    work: Path,
    out: Path,
    inits: list[str],
    folds: list[tuple[str, ...]],
    cfg: TailConfig,
    max_eval: int,
    experiment: Experiment | None = None,
) -> dict[str, Any]:
    """All (init, fold) runs of the cached-trunk recipe; merged into and written to ``out``.

    With ``experiment`` the runs are recorded as that experiment's variant instead of as the
    shipped LOSO runs (one init per variant).
    """
    if experiment is not None and len(inits) != 1:
        raise ValueError("an experiment variant is one configuration: pass a single init")
    result: dict[str, Any] = (
        json.loads(out.read_text(encoding="utf-8")) if out.exists() else {"runs": []}
    )
    for init in inits:
        trunk = trunk_for(cache_dir, work, init, cfg)
        for fold in folds:
            if experiment is None:
                row = run_fold_tail(trunk, work, init, fold, cfg, max_eval)
                _merge(result, row, work, cfg.base.seed, out)
                continue
            run_dir = work / "loso" / experiment.name / f"{experiment.variant}-{'+'.join(fold)}"
            row = run_fold_tail(trunk, work, init, fold, cfg, max_eval, run_dir)
            result = merge_experiment(row, work, cfg.base.seed, out, experiment)
    return result


def _variant_summary(config: dict[str, Any]) -> str:
    return (
        f"cut {config['cut']}, {config['epochs']} x {config['samples_per_epoch']} sampled "
        f"images, batch {config['batch_size']}, lr {config['lr']:g}, seed {config['seed']}"
    )


def merge_experiment(
    row: dict[str, Any], work: Path, seed: int, out: Path, experiment: Experiment
) -> dict[str, Any]:
    """Record ``row`` as ``experiment``'s variant in ``out``; recompute its paired differences.

    Re-reads ``out`` first (other steps may have written it). Each variant other than the
    baseline gets the paired bootstrap AUROC difference (variant - baseline) per fold where both
    ran, and a :func:`verdict`.
    """
    result: dict[str, Any] = (
        json.loads(out.read_text(encoding="utf-8")) if out.exists() else {"runs": []}
    )
    experiments: list[dict[str, Any]] = result.setdefault("experiments", [])
    entry = next((e for e in experiments if e["name"] == experiment.name), None)
    if entry is None:
        entry = {"name": experiment.name, "baseline": experiment.baseline, "runs": []}
        experiments.append(entry)
    row = row | {"variant": experiment.variant, "command": experiment.command}
    entry["runs"] = [
        r for r in entry["runs"] if (r["fold"], r.get("variant")) != (row["fold"], row["variant"])
    ] + [row]
    configs = {r["variant"]: _variant_summary(r["config"]) for r in entry["runs"]}
    entry["what"] = (
        "cached-trunk recipe variants, same seed and held-out images, paired against "
        f"`{entry['baseline']}`: " + "; ".join(f"`{v}` = {c}" for v, c in sorted(configs.items()))
    )
    variants = sorted({r["variant"] for r in entry["runs"]} - {entry["baseline"]})
    loso_dir = work / "loso" / experiment.name
    entry["paired"] = [
        p
        for v in variants
        for p in compare_pairs(work, entry["runs"], v, entry["baseline"], seed, loso_dir)
    ]
    entry["verdicts"] = {v: verdict(entry["paired"], v) for v in variants}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def verdict(paired: list[dict[str, Any]], variant: str) -> dict[str, Any]:
    """The shipping rule: better on at least one fold (paired 95 % CI above 0), measurably worse
    (CI entirely below 0) on none, and every fold of :data:`FOLDS` compared (a fold not run
    could be the one where it is worse)."""
    rows = [p for p in paired if p["a"] == variant]
    better = [p["fold"] for p in rows if p["ci95"][0] > 0]
    worse = [p["fold"] for p in rows if p["ci95"][1] < 0]
    compared = sorted(p["fold"] for p in rows)
    missing = sorted({"+".join(f) for f in FOLDS} - set(compared))
    return {
        "folds_compared": compared,
        "folds_missing": missing,
        "better": better,
        "worse": worse,
        "wins": bool(better) and not worse and not missing,
    }


def _merge(result: dict[str, Any], row: dict[str, Any], work: Path, seed: int, out: Path) -> None:
    # re-read first: folds may run as parallel processes (one per core) writing the same file
    if out.exists():
        result["runs"] = json.loads(out.read_text(encoding="utf-8")).get("runs", [])
    result["runs"] = [
        r for r in result["runs"] if (r["fold"], r["init"]) != (row["fold"], row["init"])
    ] + [row]
    inits_run = sorted({r["init"] for r in result["runs"]})
    result["paired"] = (
        compare_pairs(work, result["runs"], inits_run[0], inits_run[1], seed)
        if len(inits_run) == 2
        else []
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def score_release(
    manifest_path: Path, cache_dir: Path, folds: list[tuple[str, ...]], max_eval: int, seed: int
) -> dict[str, Any]:
    """An already exported classifier on the same held-out rows as the LOSO folds.

    Meant for a previous release that never saw some sources (there it is a true held-out
    score; for sources it was trained on it is not, and the card says which).
    """
    from training.pipeline import onnx_logits

    table = cache_dir / "images.csv"
    rows = all_rows(table)
    cache = np.load(cache_dir / "cls224.npy", mmap_mode="r")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    trained_on = sorted(manifest["extra"]["training_data"]["train"]["classification"])
    out: dict[str, Any] = {"sha256": manifest["sha256"], "trained_on": trained_on, "folds": {}}
    for fold in folds:
        pos = np.flatnonzero(np.isin(rows.sources, fold))
        held = rows.subset(pos[capped_positions(rows.subset(pos), max_eval, seed)])
        logits = onnx_logits(manifest_path.parent / manifest["file"], cache, held.index)
        out["folds"]["+".join(fold)] = _fold_metrics(
            held, logits, manifest["threshold"], manifest["temperature"], seed
        )
    return out


def compare_pairs(
    work: Path,
    rows: list[dict[str, Any]],
    a: str,
    b: str,
    seed: int,
    loso_dir: Path | None = None,
) -> list[Any]:
    """Paired AUROC differences (a - b) per fold where both were run.

    ``a`` and ``b`` name runs whose logits are in ``loso_dir/<name>-<fold>`` (default
    ``work/loso``: the shipped runs, named by init).
    """
    out = []
    root = loso_dir or work / "loso"
    for fold in {r["fold"] for r in rows}:
        paths = [root / f"{name}-{fold}" / "logits.npz" for name in (a, b)]
        if not all(p.exists() for p in paths):
            continue
        za, zb = (np.load(p) for p in paths)
        if not np.array_equal(za["index"], zb["index"]):
            continue
        d, lo, hi = paired_difference_ci(za["labels"], za["held"], zb["held"], seed)
        out.append({"fold": fold, "a": a, "b": b, "auroc_diff": d, "ci95": [lo, hi]})
    return sorted(out, key=lambda r: r["fold"])


def run_loso(
    cache_dir: Path,
    work: Path,
    out: Path,
    inits: list[str],
    folds: list[tuple[str, ...]],
    cfg: FinetuneConfig,
    max_eval: int,
) -> dict[str, Any]:
    """All (init, fold) runs; results (merged with earlier runs in ``out``) written to ``out``."""
    result: dict[str, Any] = (
        json.loads(out.read_text(encoding="utf-8")) if out.exists() else {"runs": []}
    )
    for fold in folds:
        for init in inits:
            row = run_fold(cache_dir, work, fold, replace(cfg, init=init), max_eval)
            _merge(result, row, work, cfg.seed, out)
    return result
