"""Patient-level, stratified train/validation/test split with a fixed seed.

Items are grouped (same patient, or linked as duplicates) and whole groups are assigned to a
split, so no patient and no picture crosses splits. Within each stratum (source x label) the
groups are shuffled with the seed and cut at the requested fractions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

SPLITS = ("train", "val", "test")


def assign_splits(
    groups: Sequence[int],
    strata: Sequence[str],
    seed: int,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    stratum_order: Callable[[str], tuple[int, str]] | None = None,
) -> list[str]:
    """Split name per item. ``groups[i]``: group id; ``strata[i]``: stratum of the item.

    A group's stratum is the lexicographically largest of its items' strata (deterministic).
    Deterministic for a given seed and input order of groups (groups are sorted first).
    Strata draw from one seeded generator in ``stratum_order`` (default: by name); ordering
    later-added sources last keeps the earlier sources' assignment unchanged.
    """
    if len(groups) != len(strata):
        raise ValueError("groups and strata must have the same length")
    group_stratum: dict[int, str] = {}
    for g, s in zip(groups, strata, strict=True):
        group_stratum[g] = max(group_stratum.get(g, s), s)
    by_stratum: dict[str, list[int]] = defaultdict(list)
    for g in sorted(group_stratum):
        by_stratum[group_stratum[g]].append(g)
    rng = np.random.default_rng(seed)
    split_of: dict[int, str] = {}
    for stratum in sorted(by_stratum, key=stratum_order or (lambda s: (0, s))):
        members = by_stratum[stratum]
        order = rng.permutation(len(members))
        n_train = int(round(fractions[0] * len(members)))
        n_val = int(round(fractions[1] * len(members)))
        for rank, idx in enumerate(order):
            name = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
            split_of[members[idx]] = name
    return [split_of[g] for g in groups]
