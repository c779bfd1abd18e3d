"""Lung zones and soft descriptors.

A frontal radiograph shows zones, not lobes (lobes overlap in projection), so each lung is
split into upper / middle / lower thirds of *that lung's* mask height: 6 zones, named in
English and Russian. Descriptors summarise, per zone, how strongly the explanations point
there; the reporting code consumes the typed, sorted :class:`ZoneDescriptor` tuple.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from explain.masks import BoolMask, FloatMap, LungMasks
from inference.vocabulary import ZoneId as ZoneId  # re-exported with the zone helpers

Side = Literal["right", "left"]
Level = Literal["upper", "mid", "lower"]


@dataclass(frozen=True)
class ZoneInfo:
    """A zone's identity and display names (``side`` is the patient's side)."""

    zone_id: ZoneId
    side: Side
    level: Level
    name_en: str
    name_ru: str


_RU_LEVEL: dict[str, tuple[str, str]] = {
    # (right, left) adjective forms agreeing with the feminine noun "зона".
    "upper": ("правая верхняя зона", "левая верхняя зона"),
    "mid": ("правая средняя зона", "левая средняя зона"),
    "lower": ("правая нижняя зона", "левая нижняя зона"),
}


def _info(side: Side, level: Level) -> ZoneInfo:
    ru = _RU_LEVEL[level][0 if side == "right" else 1]
    zone_id: ZoneId = f"{side}_{level}"  # type: ignore[assignment]
    return ZoneInfo(zone_id, side, level, f"{side} {level} zone", ru)


ZONE_INFOS: tuple[ZoneInfo, ...] = tuple(
    _info(side, level) for side in ("right", "left") for level in ("upper", "mid", "lower")
)


@dataclass(frozen=True)
class Zone:
    """One zone: identity and bool [H, W] mask (empty when that lung was not found)."""

    info: ZoneInfo
    mask: BoolMask

    @property
    def area(self) -> int:
        return int(self.mask.sum())


def _split_lung(mask: BoolMask) -> tuple[BoolMask, BoolMask, BoolMask]:
    rows = np.flatnonzero(mask.any(axis=1))
    empty = np.zeros_like(mask, dtype=bool)
    if rows.size == 0:
        return empty, empty.copy(), empty.copy()
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    # Thirds of this lung's own height: the two lungs may start at different rows.
    cut1 = top + round((bottom - top) / 3)
    cut2 = top + round(2 * (bottom - top) / 3)
    parts = []
    for start, stop in ((top, cut1), (cut1, cut2), (cut2, bottom)):
        part = empty.copy()
        part[start:stop] = mask[start:stop]
        parts.append(part)
    return parts[0], parts[1], parts[2]


def split_zones(lungs: LungMasks) -> tuple[Zone, ...]:
    """Six zones in ``ZONE_INFOS`` order (right upper/mid/lower, then left)."""
    right = _split_lung(lungs.right.astype(bool))
    left = _split_lung(lungs.left.astype(bool))
    return tuple(Zone(info, mask) for info, mask in zip(ZONE_INFOS, right + left, strict=True))


@dataclass(frozen=True)
class ZoneDescriptor:
    """How strongly the explanations point at one zone (all scores in [0, 1]).

    gradcam_mean / gradcam_peak: mean / max of the lung-restricted Grad-CAM map (normalised
    to the map's global peak) over the zone; None without Grad-CAM.
    lime_intensity: mean over the zone of the positive LIME weight map (normalised to the
    strongest positive superpixel); lime_positive_mass: share of all positive LIME weight
    that falls in the zone; None without LIME.
    fused: mean of ``gradcam_mean`` and ``lime_intensity`` (whichever exist), the zone's
    "intensity" in the descriptor text.
    """

    zone_id: ZoneId
    side: Side
    level: Level
    name_en: str
    name_ru: str
    area_fraction: float
    gradcam_mean: float | None
    gradcam_peak: float | None
    lime_intensity: float | None
    lime_positive_mass: float | None
    fused: float

    def text_en(self) -> str:
        return f"{self.name_en}: intensity {self.fused:.2f}"

    def text_ru(self) -> str:
        return f"{self.name_ru}: интенсивность {self.fused:.2f}"


@dataclass(frozen=True)
class LimeZoneInput:
    """LIME evidence painted on pixels: float32 [H, W] maps at the image size.

    intensity: positive weight of each pixel's superpixel / max positive weight, in [0, 1];
    mass: positive weight of each pixel's superpixel / superpixel area / total positive
    weight (sums to 1 over the image when any weight is positive).
    """

    intensity: FloatMap
    mass: FloatMap


def describe_zones(
    zones: tuple[Zone, ...],
    gradcam: FloatMap | None = None,
    lime: LimeZoneInput | None = None,
) -> tuple[ZoneDescriptor, ...]:
    """Descriptors for non-empty zones, sorted by ``fused`` (highest first, ties by zone order).

    gradcam: lung-restricted Grad-CAM map, float32 [H, W] in [0, 1]. At least one of
    ``gradcam`` / ``lime`` is required.
    """
    if gradcam is None and lime is None:
        raise ValueError("describe_zones needs a Grad-CAM map, LIME maps, or both")
    total_area = sum(zone.area for zone in zones)
    out: list[ZoneDescriptor] = []
    for zone in zones:
        if zone.area == 0:
            continue
        gc_mean = gc_peak = lime_int = lime_mass = None
        channels: list[float] = []
        if gradcam is not None:
            values = gradcam[zone.mask]
            gc_mean, gc_peak = float(values.mean()), float(values.max())
            channels.append(gc_mean)
        if lime is not None:
            lime_int = float(lime.intensity[zone.mask].mean())
            lime_mass = float(lime.mass[zone.mask].sum())
            channels.append(lime_int)
        out.append(
            ZoneDescriptor(
                zone_id=zone.info.zone_id,
                side=zone.info.side,
                level=zone.info.level,
                name_en=zone.info.name_en,
                name_ru=zone.info.name_ru,
                area_fraction=zone.area / total_area,
                gradcam_mean=gc_mean,
                gradcam_peak=gc_peak,
                lime_intensity=lime_int,
                lime_positive_mass=lime_mass,
                fused=float(np.mean(channels)),
            )
        )
    # sorted() is stable, so equal scores keep the anatomical zone order.
    return tuple(sorted(out, key=lambda d: -d.fused))
