"""Training throughput of the end-to-end classifier recipe on this CPU (images per second).

One training step = site augmentation of a uint8 batch + forward + backward + AdamW step,
exactly as :func:`training.finetune.finetune` runs it. The LOSO and final-run budgets in the
model card were sized from these numbers.

    nice -n 10 python bench/bench_train_step.py --sizes 224 160 --inits lite0 b0-lite0-transplant
"""

from __future__ import annotations

import argparse
import json
import sys  # noqa: E402
import time
from pathlib import Path  # noqa: E402

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.augment import normalise, site_augment
from training.finetune import param_groups
from training.models import IMAGENET_MEAN, IMAGENET_STD, ClassifierInit, build_classifier


def steps_per_second(init: str, size: int, batch: int, steps: int) -> dict[str, float]:
    model = build_classifier(ClassifierInit(init)).train()
    model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(param_groups(model, 1e-3, 0.7))
    gen = torch.Generator().manual_seed(0)
    u8 = np.random.default_rng(0).integers(0, 255, (batch, 256, 256), dtype=np.uint8)
    labels = torch.arange(batch).remainder(2).float()
    times = []
    for _ in range(steps + 1):  # the first step warms up allocators
        start = time.perf_counter()
        gray = torch.from_numpy(u8.astype(np.float32) / 255)
        x = normalise(site_augment(gray, gen, size), IMAGENET_MEAN, IMAGENET_STD)
        loss = F.binary_cross_entropy_with_logits(
            model(x.contiguous(memory_format=torch.channels_last)).squeeze(1), labels
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    median = float(np.median(times[1:]))
    return {
        "init": init,
        "size": size,
        "batch": batch,
        "s_per_step": median,
        "img_per_s": batch / median,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 160])
    p.add_argument("--inits", nargs="+", default=["lite0", "b0-lite0-transplant"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for init in args.inits:
        for size in args.sizes:
            print(json.dumps(steps_per_second(init, size, args.batch, args.steps)), flush=True)


if __name__ == "__main__":
    main()
