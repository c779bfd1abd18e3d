"""The learned input gate (class-conditional Mahalanobis): generated features, tiny models."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from inference.classify import run_classifier
from inference.errors import ModelError
from inference.input_gate import InputGate
from inference.intake import decode_upload
from inference.models import Classifier
from inference.ood import load_ood_model, save_ood_model
from inference.sessions import RuntimeOptions, load_verified_model
from inference.suitability import NotAChestRadiograph
from tests.factories import png_bytes, synthetic_chest
from tests.tiny_models import write_tiny_weights
from training.gate import VARIANTS, fit_gaussian, make_variant, pooled

DIM = 16
SHA = "a" * 64


def _blobs(seed: int = 0, n: int = 400) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = {k: rng.normal(0, 4, DIM) for k in VARIANTS}
    return {k: (c + rng.normal(0, 1, (n, DIM))).astype(np.float32) for k, c in centres.items()}


def test_scores_are_about_one_inside_and_large_outside() -> None:
    feats = _blobs()
    model, shrinkage = fit_gaussian(feats, rank=8)
    assert 0.0 <= shrinkage <= 1.0
    inside = model.scores(_blobs(seed=0, n=50)["upright"])
    far = model.scores(np.full((5, DIM), 40.0, np.float32))
    assert 0.5 < float(np.median(inside)) < 1.5
    assert float(far.min()) > 5 * float(inside.max())


def test_nearest_variant_names_the_flag() -> None:
    feats = _blobs()
    model, _ = fit_gaussian(feats, rank=8, threshold=3.0)
    assert model.assess(feats["inverted"][0]).flags == ("inverted",)
    assert model.assess(feats["rot90"][1]).flags == ("rotated",)
    assert model.assess(feats["lateral_like"][2]).flags == ("lateral_view",)
    upright = model.assess(feats["upright"][3])
    assert upright.flags == () and not upright.rejected
    assert model.assess(np.full(DIM, 40.0, np.float32)).rejected


def test_nan_features_are_refused() -> None:
    model, _ = fit_gaussian(_blobs(), rank=8, threshold=3.0)
    assert model.assess(np.full(DIM, np.nan, np.float32)).rejected


def test_file_round_trip_and_bindings(tmp_path: Path) -> None:
    model, _ = fit_gaussian(_blobs(), rank=8, threshold=2.5)
    path = tmp_path / "input_gate.manifest.json"
    save_ood_model(model, path, SHA)
    loaded = load_ood_model(path, SHA, DIM)
    x = _blobs(seed=3, n=5)["rot180"]
    np.testing.assert_allclose(loaded.scores(x), model.scores(x), rtol=1e-5)
    assert loaded.threshold == 2.5
    with pytest.raises(ModelError, match="another classifier"):
        load_ood_model(path, "b" * 64, DIM)
    with pytest.raises(ModelError, match="feature size"):
        load_ood_model(path, SHA, DIM + 1)
    (tmp_path / "input_gate.npz").write_bytes(b"tampered")
    with pytest.raises(ModelError, match="sha256"):
        load_ood_model(path, SHA, DIM)


def test_manifest_must_be_an_input_gate(tmp_path: Path) -> None:
    path = tmp_path / "input_gate.manifest.json"
    path.write_text(json.dumps({"schema_version": 1, "kind": "classifier"}))
    with pytest.raises(ModelError):
        load_ood_model(path, SHA, DIM)


def test_variants_keep_the_shape() -> None:
    img = np.random.default_rng(0).random((224, 224)).astype(np.float32)
    for kind in VARIANTS:
        out = make_variant(img, kind)
        assert out.shape == img.shape and out.dtype == np.float32
    np.testing.assert_allclose(make_variant(img, "inverted"), 1 - img)


def _chests(n: int) -> list[np.ndarray]:
    """``n`` radiograph-like images with varied exposure and a little noise (seeded)."""
    rng = np.random.default_rng(0)
    return [
        np.clip(
            synthetic_chest(224, 224).astype(np.float32) / 255 * rng.uniform(0.8, 1.0)
            + rng.normal(0, 0.02, (224, 224)),
            0,
            1,
        ).astype(np.float32)
        for _ in range(n)
    ]


def test_gate_on_a_tiny_classifier(tiny_weights: Path) -> None:
    """Fit on the tiny classifier's pooled features of radiograph-like images; the gate then
    accepts such an image, flags its negative, and refuses a bright checkerboard."""
    model = load_verified_model(tiny_weights / "classifier.manifest.json", RuntimeOptions())
    chests = _chests(60)
    feats = {
        kind: np.stack([run_classifier(model, [make_variant(c, kind)])[0].pooled for c in chests])
        for kind in VARIANTS
    }
    fitted, _ = fit_gaussian(feats, rank=3)
    scores = fitted.scores(feats["upright"])
    gate_model = replace(fitted, threshold=float(scores.max()) * 1.5)
    gate = InputGate(ood=gate_model)
    chest = decode_upload(png_bytes(synthetic_chest(224, 224)))
    pre = gate.precheck(chest)
    quality = gate.finish(pre, run_classifier(model, [chest.pixels])[0].pooled)
    assert quality.ood_score is not None and quality.ood_score <= gate_model.threshold
    checker = (np.indices((224, 224)).sum(axis=0) // 28 % 2).astype(np.float32)
    with pytest.raises(NotAChestRadiograph) as info:
        gate.finish(pre, run_classifier(model, [checker])[0].pooled)
    assert info.value.reason == "out_of_distribution"


def test_the_gate_records_the_output_it_was_fitted_on(tmp_path: Path) -> None:
    model, _ = fit_gaussian(_blobs(), rank=8, threshold=2.5)
    path = tmp_path / "input_gate.manifest.json"
    save_ood_model(replace(model, features_output="gate_features"), path, SHA)
    assert json.loads(path.read_text())["features_output"] == "gate_features"
    assert load_ood_model(path, SHA, DIM, "gate_features").features_output == "gate_features"
    with pytest.raises(ModelError, match="output 'gate_features'"):
        load_ood_model(path, SHA, DIM)  # the service would feed it pooled ``features``


def test_a_gate_fitted_before_features_output_existed_reads_features(tmp_path: Path) -> None:
    """2.0.0's gate manifest has no ``features_output``: it was fitted on ``features``."""
    model, _ = fit_gaussian(_blobs(), rank=8, threshold=2.5)
    path = tmp_path / "input_gate.manifest.json"
    save_ood_model(model, path, SHA)
    data = json.loads(path.read_text())
    del data["features_output"]
    path.write_text(json.dumps(data))
    assert load_ood_model(path, SHA, DIM).features_output == "features"
    with pytest.raises(ModelError, match="output 'features'"):
        load_ood_model(path, SHA, DIM, "gate_features")


def test_gate_on_the_gate_features_of_a_tiny_classifier(tmp_path: Path) -> None:
    """A classifier with ``gate_features``: training.gate fits on it (D=6, not the 4 channels
    of ``features``), the manifest says so, and the service-side load and score agree."""
    weights = write_tiny_weights(tmp_path, gate_features=True)
    clf = Classifier.load(weights / "classifier.manifest.json", RuntimeOptions(prefer_gpu=False))
    chests = _chests(40)
    feats = {kind: pooled(clf, (make_variant(c, kind) for c in chests), 16) for kind in VARIANTS}
    assert feats["upright"].shape == (40, 6)
    fitted, _ = fit_gaussian(feats, rank=3)
    threshold = float(fitted.scores(feats["upright"]).max()) * 1.5
    path = weights / "input_gate.manifest.json"
    save_ood_model(
        replace(fitted, threshold=threshold, features_output=clf.gate_role),
        path,
        clf.manifest.sha256,
    )
    ood = load_ood_model(path, clf.manifest.sha256, clf.gate_feature_dim, clf.gate_role)
    gate = InputGate(ood=ood)
    chest = decode_upload(png_bytes(synthetic_chest(224, 224)))
    quality = gate.finish(gate.precheck(chest), clf.predict([chest.pixels])[0].pooled)
    assert quality.ood_score is not None and quality.ood_score <= threshold
    checker = (np.indices((224, 224)).sum(axis=0) // 28 % 2).astype(np.float32)
    with pytest.raises(NotAChestRadiograph):
        gate.finish(gate.precheck(chest), clf.predict([checker])[0].pooled)


def test_the_service_loads_a_gate_on_gate_features_and_refuses_a_mismatch(tmp_path: Path) -> None:
    """load_registry: a gate fitted on ``gate_features`` serves with a classifier that has them;
    a gate fitted on pooled ``features`` for the same classifier is refused at start-up."""
    from service.registry import load_registry
    from service.settings import ReportSettings, Settings

    weights = write_tiny_weights(tmp_path, gate_features=True)
    clf = Classifier.load(weights / "classifier.manifest.json", RuntimeOptions(prefer_gpu=False))
    rng = np.random.default_rng(1)
    feats = {k: rng.normal(i, 1, (50, 6)).astype(np.float32) for i, k in enumerate(VARIANTS)}
    fitted, _ = fit_gaussian(feats, rank=3, threshold=5.0)
    path = weights / "input_gate.manifest.json"
    save_ood_model(replace(fitted, features_output="gate_features"), path, clf.manifest.sha256)
    settings = Settings(
        weights_dir=weights, report=ReportSettings(backend="disabled"), _env_file=None
    )  # type: ignore[call-arg]
    registry = load_registry(settings)
    ood = registry.input_gate.ood
    assert ood is not None and ood.features_output == "gate_features" and ood.feature_dim == 6
    save_ood_model(fitted, path, clf.manifest.sha256)  # fitted on ``features``: stale
    with pytest.raises(ModelError, match="fitted on the classifier output"):
        load_registry(settings)
