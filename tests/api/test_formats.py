"""Every supported input variant classifies and segments (issue 2, positive cases).

PNG (8/16-bit, gray/RGB/RGBA/LA/palette/1-bit), JPEG (gray/RGB/CMYK/progressive), WEBP
(lossy/lossless/alpha) and DICOM (MONOCHROME1/2 at 8/12/16 bits, windowed, rescaled, implicit
VR, RLE, JPEG baseline, JPEG 2000, JPEG-LS, HTJ2K) -> 200 on /classify and /segment, with the
declared image info and masks at the upload's size. Lossless encodings of the same pixels must
give the same probability, so a decoder that silently returns the wrong pixels is caught.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.uid import (
    UID,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from tests import factories as f

H, W = 160, 136  # non-square on purpose: masks must come back at W x H, not transposed


@dataclass(frozen=True)
class Variant:
    id: str
    build: Callable[[], bytes]
    fmt: str
    bits: int
    photometric: str = "MONOCHROME2"
    group: str | None = None  # variants in one group hold identical pixels -> identical output


def _gray8() -> np.ndarray:
    return f.synthetic_chest(H, W, 8)


def _pil(mode: str, fmt: str, **save: object) -> Callable[[], bytes]:
    def build() -> bytes:
        img = Image.fromarray(_gray8())
        if mode == "RGBA":
            img = Image.merge("RGBA", (img, img, img, Image.new("L", img.size, 200)))
        elif mode != "L":
            img = img.convert(mode)
        return f.encode(img, fmt, **save)

    return build


def _dicom(bits: int, photometric: str = "MONOCHROME2", **kw: object) -> Callable[[], bytes]:
    return lambda: f.synthetic_dicom(
        height=H, width=W, bits=bits, photometric=photometric, patient_name=f.CANARY_NAME, **kw
    )


def _compressed(ts: UID, bits: int) -> Callable[[], bytes]:
    return lambda: f.compressed_dicom(ts, bits=bits, height=H, width=W)


def _jpeg_baseline_dicom() -> bytes:
    stream = f.encode(Image.fromarray(_gray8()), "JPEG", quality=95)
    return f.encapsulated_dicom([stream], JPEGBaseline8Bit, bits=8, height=H, width=W)


def _imagecodecs(ts: UID, bits: int) -> Callable[[], bytes]:
    def build() -> bytes:
        pytest.importorskip("imagecodecs", reason="JPEG-LS/HTJ2K test encoders (dev extra)")
        return f.imagecodecs_dicom(ts, bits=bits, height=H, width=W)

    return build


VARIANTS: list[Variant] = [
    # PNG
    Variant("png-gray-8", lambda: f.png_bytes(_gray8()), "png", 8, group="raster8"),
    Variant("png-gray-16", lambda: f.png_bytes(f.synthetic_chest(H, W, 16)), "png", 16),
    Variant("png-rgb", _pil("RGB", "PNG"), "png", 8, group="raster8"),
    Variant("png-rgba", _pil("RGBA", "PNG"), "png", 8, group="raster8"),
    Variant("png-la", _pil("LA", "PNG"), "png", 8, group="raster8"),
    Variant("png-palette", _pil("P", "PNG"), "png", 8),
    # JPEG (lossy: no equality group)
    Variant("jpeg-gray", _pil("L", "JPEG", quality=92), "jpeg", 8),
    Variant("jpeg-rgb", _pil("RGB", "JPEG", quality=92), "jpeg", 8),
    Variant("jpeg-cmyk", _pil("CMYK", "JPEG", quality=92), "jpeg", 8),
    Variant("jpeg-progressive", _pil("L", "JPEG", quality=92, progressive=True), "jpeg", 8),
    # WEBP
    Variant("webp-lossy", _pil("RGB", "WEBP", quality=90), "webp", 8),
    Variant("webp-lossless", _pil("RGB", "WEBP", lossless=True), "webp", 8, group="raster8"),
    Variant("webp-rgba-lossless", _pil("RGBA", "WEBP", lossless=True), "webp", 8, group="raster8"),
    # DICOM uncompressed
    Variant("dicom-mono2-8", _dicom(8), "dicom", 8, group="dicom8"),
    Variant("dicom-mono1-8", _dicom(8, "MONOCHROME1"), "dicom", 8, "MONOCHROME1", group="dicom8"),
    Variant("dicom-mono2-12", _dicom(12), "dicom", 12, group="dicom12"),
    Variant(
        "dicom-mono1-12", _dicom(12, "MONOCHROME1"), "dicom", 12, "MONOCHROME1", group="dicom12"
    ),
    Variant("dicom-mono2-16", _dicom(16), "dicom", 16, group="dicom16"),
    Variant(
        "dicom-mono1-16", _dicom(16, "MONOCHROME1"), "dicom", 16, "MONOCHROME1", group="dicom16"
    ),
    Variant(
        "dicom-implicit-vr-12",
        _dicom(12, transfer_syntax=ImplicitVRLittleEndian),
        "dicom",
        12,
        group="dicom12",
    ),
    Variant("dicom-windowed-12", _dicom(12, window=(2048.0, 3000.0)), "dicom", 12),
    Variant(
        "dicom-windowed-mono1-12",
        _dicom(12, "MONOCHROME1", window=(2048.0, 3000.0)),
        "dicom",
        12,
        "MONOCHROME1",
    ),
    Variant(
        "dicom-rescaled-12", _dicom(12, slope=2.0, intercept=-1024.0), "dicom", 12, group="dicom12"
    ),
    Variant(
        "dicom-rescaled-windowed-12",
        _dicom(12, slope=0.5, intercept=10.0, window=(1000.0, 1500.0)),
        "dicom",
        12,
    ),
    # DICOM compressed (lossless ones must equal their uncompressed twin)
    Variant("dicom-rle-8", _compressed(RLELossless, 8), "dicom", 8, group="dicom8"),
    Variant("dicom-rle-12", _compressed(RLELossless, 12), "dicom", 12, group="dicom12"),
    Variant("dicom-rle-16", _compressed(RLELossless, 16), "dicom", 16, group="dicom16"),
    Variant("dicom-j2k-lossless-8", _compressed(JPEG2000Lossless, 8), "dicom", 8, group="dicom8"),
    Variant(
        "dicom-j2k-lossless-12", _compressed(JPEG2000Lossless, 12), "dicom", 12, group="dicom12"
    ),
    Variant(
        "dicom-j2k-lossless-16", _compressed(JPEG2000Lossless, 16), "dicom", 16, group="dicom16"
    ),
    Variant("dicom-jpeg-baseline-8", _jpeg_baseline_dicom, "dicom", 8),
    Variant("dicom-jpegls-8", _imagecodecs(JPEGLSLossless, 8), "dicom", 8, group="dicom8"),
    Variant("dicom-jpegls-12", _imagecodecs(JPEGLSLossless, 12), "dicom", 12, group="dicom12"),
    Variant("dicom-jpegls-16", _imagecodecs(JPEGLSLossless, 16), "dicom", 16, group="dicom16"),
    Variant("dicom-htj2k-12", _imagecodecs(HTJ2KLossless, 12), "dicom", 12, group="dicom12"),
]


def _post(client: TestClient, route: str, data: bytes) -> dict[str, object]:
    resp = client.post(route, files={"file": ("upload.bin", data, "application/octet-stream")})
    assert resp.status_code == 200, resp.text
    assert "CANARY" not in resp.text
    return resp.json()  # type: ignore[no-any-return]


def _png_size(b64: str) -> tuple[int, int]:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as img:
        return img.size


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.id for v in VARIANTS])
def test_variant_classifies_and_segments(client: TestClient, variant: Variant) -> None:
    data = variant.build()
    expected_image = {
        "width": W,
        "height": H,
        "format": variant.fmt,
        "bits_stored": variant.bits,
        "photometric": variant.photometric,
        "analysis_width": W,
        "analysis_height": H,
        "analysis_scale": 1.0,
    }
    cls = _post(client, "/classify", data)
    assert cls["image"] == expected_image
    assert 0.0 <= float(cls["probability_finding"]) <= 1.0  # type: ignore[arg-type]
    seg = _post(client, "/segment", data)
    assert seg["image"] == expected_image
    structures = seg["structures"]
    assert isinstance(structures, list) and len(structures) >= 3
    for s in structures:
        assert _png_size(s["mask_png"]) == (W, H), s["name"]
    assert _png_size(seg["overlay_png"]) == (W, H)  # type: ignore[arg-type]


GROUPS = sorted({v.group for v in VARIANTS if v.group})


@pytest.mark.parametrize("group", GROUPS)
def test_lossless_encodings_agree(client: TestClient, group: str) -> None:
    """Same pixels, different containers/codecs -> the same probability (to the 6 decimals sent)."""
    members = [v for v in VARIANTS if v.group == group]
    probs = {}
    for v in members:
        try:
            data = v.build()
        except pytest.skip.Exception:
            continue
        probs[v.id] = float(_post(client, "/classify", data)["probability_finding"])  # type: ignore[arg-type]
    assert len(probs) >= 2
    reference = next(iter(probs.values()))
    assert all(p == pytest.approx(reference, abs=2e-6) for p in probs.values()), probs


def test_sixteen_bit_png_uses_the_full_depth(client: TestClient) -> None:
    """A 16-bit PNG whose data sit in the low 12 bits still uses the whole [0, 1] range."""
    from inference.intake import decode_upload

    out = decode_upload(f.png_bytes(f.synthetic_chest(H, W, 12)))
    assert out.bits_stored == 16
    assert float(out.pixels.max()) == pytest.approx(1.0) and float(
        out.pixels.min()
    ) == pytest.approx(0.0)


def test_windowed_dicom_differs_from_unwindowed() -> None:
    """The VOI window is applied (a narrow window saturates more pixels than the plain stretch)."""
    from inference.intake import decode_upload

    plain = decode_upload(_dicom(12)()).pixels
    narrow = decode_upload(_dicom(12, window=(2048.0, 200.0))()).pixels
    saturated = lambda a: float(np.mean((a <= 0.0) | (a >= 1.0)))  # noqa: E731
    assert saturated(narrow) > saturated(plain) + 0.2


def test_one_bit_png_decodes_and_is_refused_as_a_graphic(client: TestClient) -> None:
    """1-bit PNGs decode (intake), but two-tone pictures are not radiographs (input gate)."""
    img = Image.fromarray(_gray8()).convert("1", dither=Image.Dither.NONE)
    data = f.encode(img, "PNG")
    resp = client.post("/classify", files={"file": ("x", data, "application/octet-stream")})
    assert resp.status_code == 422, resp.text
    assert resp.json()["code"] == "not_a_chest_radiograph" and resp.json()["reason"] == "graphic"
