"""The generated hostile set for the input gate: non-radiographs and suspicious radiographs.

Everything is generated here (numpy, Pillow) or taken from scikit-image's bundled sample images
(``skimage.data`` files shipped inside the wheel; nothing is downloaded). Each case is encoded
as the bytes a client would upload, so evaluations go through the real intake path.

* ``expect="reject"``: blank, tiny, noise, gradients, text pages / forms, natural images. The
  gate must answer 422 ``not_a_chest_radiograph`` for every one.
* ``expect="flag"``: real radiographs made suspicious (inverted, rotated 90/180/270, lateral-like
  half crops, heavy collimation). These stay answerable; the gate should flag them.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

U8 = npt.NDArray[np.uint8]
Expect = Literal["reject", "flag"]

# Bundled with the scikit-image wheel (no network); stereo/3-D sets are left out.
SKIMAGE_IMAGES = (
    "astronaut",
    "brick",
    "camera",
    "cell",
    "chelsea",
    "checkerboard",
    "clock",
    "coffee",
    "coins",
    "colorwheel",
    "grass",
    "gravel",
    "horse",
    "hubble_deep_field",
    "immunohistochemistry",
    "logo",
    "microaneurysms",
    "moon",
    "page",
    "retina",
    "rocket",
    "shepp_logan_phantom",
    "text",
)


@dataclass(frozen=True)
class HostileCase:
    name: str
    category: str
    expect: Expect
    data: bytes


def encode_png(arr: npt.NDArray[np.generic]) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _u8(x: npt.NDArray[np.floating]) -> U8:
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def blanks() -> Iterator[HostileCase]:
    for name, value in (("black", 0), ("white", 255), ("grey", 128)):
        yield HostileCase(
            f"{name}-512", "blank", "reject", encode_png(np.full((512, 512), value, np.uint8))
        )
    yield HostileCase("one-pixel", "blank", "reject", encode_png(np.full((1, 1), 90, np.uint8)))
    yield HostileCase("thumb-64", "blank", "reject", encode_png(np.full((64, 64), 40, np.uint8)))
    near = np.full((512, 512), 200, np.uint8)
    near[::37, ::41] = 203  # a few stray values: near-constant, not constant
    yield HostileCase("near-constant", "blank", "reject", encode_png(near))


def noises(rng: np.random.Generator) -> Iterator[HostileCase]:
    yield HostileCase(
        "uniform-512",
        "noise",
        "reject",
        encode_png(rng.integers(0, 256, (512, 512), dtype=np.uint8)),
    )
    gauss = _u8(np.clip(rng.normal(0.5, 0.15, (640, 512)), 0, 1))
    yield HostileCase("gaussian-640x512", "noise", "reject", encode_png(gauss))
    yield HostileCase(
        "noise-16", "noise", "reject", encode_png(rng.integers(0, 256, (16, 16), dtype=np.uint8))
    )
    yield HostileCase(
        "strip-10000x3",
        "noise",
        "reject",
        encode_png(rng.integers(0, 256, (3, 10000), dtype=np.uint8)),
    )
    yield HostileCase(
        "strip-3x10000",
        "noise",
        "reject",
        encode_png(rng.integers(0, 256, (10000, 3), dtype=np.uint8)),
    )
    salt = np.where(rng.random((512, 512)) < 0.5, 0, 255).astype(np.uint8)
    yield HostileCase("salt-pepper", "noise", "reject", encode_png(salt))
    rgb = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    yield HostileCase("colour-noise", "noise", "reject", encode_png(rgb))


def gradients() -> Iterator[HostileCase]:
    yy, xx = np.mgrid[0:512, 0:512].astype(np.float64) / 511.0
    yield HostileCase("horizontal", "gradient", "reject", encode_png(_u8(xx)))
    yield HostileCase("vertical", "gradient", "reject", encode_png(_u8(yy)))
    yield HostileCase("diagonal", "gradient", "reject", encode_png(_u8((xx + yy) / 2)))
    r = np.hypot(xx - 0.5, yy - 0.5)
    yield HostileCase("radial", "gradient", "reject", encode_png(_u8(1 - np.clip(r / 0.7, 0, 1))))
    yield HostileCase(
        "sine", "gradient", "reject", encode_png(_u8(0.5 + 0.5 * np.sin(12 * xx) * np.cos(9 * yy)))
    )
    h, w = 480, 640
    y2, x2 = np.mgrid[0:h, 0:w].astype(np.float64)
    rgb = np.stack([x2 / w, y2 / h, 1 - x2 / w], axis=-1)
    yield HostileCase("colour-gradient", "gradient", "reject", encode_png(_u8(rgb)))


def _page(lines: int, dark_on_light: bool, seed: int, form: bool = False) -> U8:
    rng = np.random.default_rng(seed)
    bg, fg = (250, 20) if dark_on_light else (15, 235)
    img = Image.new("L", (850, 1100), bg)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=18)
    words = ["patient", "referral", "chest", "x-ray", "date", "signature", "ward", "clinical"]
    for i in range(lines):
        y = 60 + i * 30
        text = " ".join(rng.choice(words, size=int(rng.integers(4, 9))))
        draw.text((60, y), text, fill=fg, font=font)
        if form and i % 4 == 0:
            draw.rectangle((420, y, 800, y + 24), outline=fg, width=2)
    return np.asarray(img, dtype=np.uint8)


def documents() -> Iterator[HostileCase]:
    yield HostileCase("text-page", "document", "reject", encode_png(_page(32, True, 1)))
    yield HostileCase("text-page-short", "document", "reject", encode_png(_page(8, True, 2)))
    yield HostileCase("text-page-negative", "document", "reject", encode_png(_page(32, False, 3)))
    yield HostileCase("form", "document", "reject", encode_png(_page(28, True, 4, form=True)))
    scan = _page(30, True, 5).astype(np.float64) / 255.0
    scan = 0.85 * scan + 0.1 * np.linspace(0, 1, scan.shape[1])[None, :]  # uneven scanner light
    yield HostileCase("scanned-page", "document", "reject", encode_png(_u8(scan)))


def natural_images() -> Iterator[HostileCase]:
    from skimage import data

    for name in SKIMAGE_IMAGES:
        arr = np.asarray(getattr(data, name)())
        if arr.dtype != np.uint8:
            arr = _u8(arr.astype(np.float64) / max(float(arr.max()), 1e-9))
        if arr.ndim == 3 and arr.shape[2] == 4:
            arr = arr[..., :3]
        yield HostileCase(name, "natural", "reject", encode_png(np.ascontiguousarray(arr)))


def non_radiographs(seed: int = 0) -> list[HostileCase]:
    """Every generated upload that is not a chest radiograph (expect 422)."""
    rng = np.random.default_rng(seed)
    makers: list[Callable[[], Iterator[HostileCase]]] = [
        blanks,
        lambda: noises(rng),
        gradients,
        documents,
        natural_images,
    ]
    return [case for make in makers for case in make()]


def suspicious_variants(name: str, gray: U8) -> list[HostileCase]:
    """Plausible-but-suspicious variants of one real radiograph (uint8 [H, W])."""
    h, w = gray.shape
    half = gray[:, : max(1, int(w * 0.55))]
    pad = np.zeros((int(h * 1.8), int(w * 1.8)), np.uint8)
    y0, x0 = (pad.shape[0] - h) // 2, (pad.shape[1] - w) // 2
    pad[y0 : y0 + h, x0 : x0 + w] = gray
    cases = {
        "inverted": (255 - gray),
        "rot90": np.rot90(gray, 1),
        "rot180": np.rot90(gray, 2),
        "rot270": np.rot90(gray, 3),
        "lateral_like": half,
        "collimated": pad,
    }
    return [
        HostileCase(f"{name}:{kind}", kind, "flag", encode_png(np.ascontiguousarray(arr)))
        for kind, arr in cases.items()
    ]
