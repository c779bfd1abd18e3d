"""The integration step on the tiny shared-format fixture: table, caches, partial-label targets."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from inference.preprocess import InputSpec, to_model_input
from training.prepare import IGNORE, load_gray, prepare
from training.records import read_table

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "training" / "shared"


def test_prepare_writes_table_and_caches(tmp_path: Path) -> None:
    table = prepare(FIXTURE, tmp_path / "cache", seed=1)
    records, extra = read_table(table)
    names = [Path(r.image).name for r in records]
    assert "lateral.jpg" not in names  # frontal views only
    assert len(records) == 3
    assert set(extra["split"]) <= {"train", "val", "test"}
    cls = np.load(tmp_path / "cache" / "cls224.npy")
    assert cls.shape == (3, 224, 224) and cls.dtype == np.float32
    # the cache is exactly what the serving preprocessing resizes to
    i = names.index("IM-0001-0001.jpg")
    row = int(extra["cls_index"][i])
    spec = InputSpec(224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    served = to_model_input(load_gray(records[i].image), spec)
    np.testing.assert_array_equal(to_model_input(cls[row], spec), served)
    # the uint8 training cache holds the same picture at 256 px (within rounding)
    u8 = np.load(tmp_path / "cache" / "cls256u8.npy")
    assert u8.shape == (3, 256, 256) and u8.dtype == np.uint8
    back = to_model_input(u8[row].astype(np.float32) / 255, spec)
    assert np.abs(back - served).mean() < 0.05


def test_lungs_only_masks_become_partial_labels(tmp_path: Path) -> None:
    table = prepare(FIXTURE, tmp_path / "cache", seed=1)
    records, extra = read_table(table)
    seg_rows = [int(s) for s in extra["seg_index"] if int(s) >= 0]
    assert seg_rows == [0]
    target = np.load(tmp_path / "cache" / "seg_targets.npy")[0]
    lungs = target[3] == 1
    assert 0.05 < lungs.mean() < 0.5
    for side in (0, 1):  # right/left: 0 outside the lungs, unknown inside
        assert (target[side][~lungs] == 0).all() and (target[side][lungs] == IGNORE).all()
    assert (target[2] == IGNORE).all()  # heart not drawn by this source


def test_exact_duplicate_is_dropped_and_shares_the_split(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(FIXTURE, data)
    src = data / "images" / "kermany" / "IM-0001-0001.jpg"
    shutil.copy(src, data / "images" / "nih" / "copy.jpg")
    with (data / "classification.csv").open("a", encoding="utf-8") as fh:
        fh.write("images/nih/copy.jpg,0,No Finding,nih,nih:99,PA,adult,\n")
    records, extra = read_table(prepare(data, tmp_path / "cache", seed=1))
    names = [Path(r.image).name for r in records]
    a, b = names.index("IM-0001-0001.jpg"), names.index("copy.jpg")
    assert extra["duplicate_of"][b] == records[a].image and extra["duplicate_of"][a] == ""
    assert extra["split"][a] == extra["split"][b] and extra["group"][a] == extra["group"][b]


def test_cli_prepare_with_native_sources_and_figure(tmp_path: Path) -> None:
    from training.__main__ import main

    fixtures = FIXTURE.parent
    args = ["--data", str(FIXTURE), "--work", str(tmp_path), "--weights", str(tmp_path / "w")]
    native = [
        "--nih",
        str(fixtures / "nih"),
        "--chexpert",
        str(fixtures / "chexpert" / "CheXpert-v1.0-small"),
    ]
    assert main(["prepare", *args, *native]) == 0
    records, _ = read_table(tmp_path / "cache" / "images.csv")
    assert {r.source for r in records} == {"kermany", "nih", "chexpert"}
    assert main(["figure", *args]) == 0
    assert (tmp_path / "w" / "label_distribution.png").stat().st_size > 1000


def test_a_negative_source_is_cached_as_a_positive(tmp_path: Path) -> None:
    # a JSRT film as shared is a negative: the cache (what the models learn from) holds it
    # turned positive, as a hospital would send it; other sources are cached as stored
    data = tmp_path / "data"
    shutil.copytree(FIXTURE, data)
    (data / "images" / "jsrt").mkdir()
    shutil.copy(data / "images" / "nih" / "00000002_000.jpg", data / "images" / "jsrt" / "n.jpg")
    with (data / "classification.csv").open("a", encoding="utf-8") as fh:
        fh.write("images/jsrt/n.jpg,0,No Finding,jsrt,jsrt:n,PA,adult,\n")
    records, extra = read_table(prepare(data, tmp_path / "cache", seed=1))
    cls = np.load(tmp_path / "cache" / "cls224.npy")
    row = {
        Path(r.image).parent.name: int(i) for r, i in zip(records, extra["cls_index"], strict=True)
    }
    np.testing.assert_allclose(cls[row["jsrt"]], 1.0 - cls[row["nih"]], atol=1e-6)
    # and the two are no longer the same picture for deduplication
    assert not any(extra["duplicate_of"])
