"""Label-distribution figure (per source and finding), like figure 1 of the reference paper."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from training.records import read_table


def label_distribution(table: Path, out: Path) -> Counter[tuple[str, str]]:
    """Write a two-panel PNG (labels per source; findings per source); returns the finding counts.

    Counts the deduplicated, frontal classification rows of all splits.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records, extra = read_table(table)
    kept = [
        r for r, dup in zip(records, extra["duplicate_of"], strict=True) if not dup and r.label >= 0
    ]
    sources = sorted({r.source for r in kept})
    labels = Counter((r.source, r.label) for r in kept)
    findings: Counter[tuple[str, str]] = Counter()
    for r in kept:
        for f in r.findings.replace(",", ";").split(";"):
            if f.strip():
                findings[(r.source, f.strip())] += 1
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [1, 1.6]})
    neg = [labels[(s, 0)] for s in sources]
    pos = [labels[(s, 1)] for s in sources]
    ax1.bar(sources, neg, label="no finding", color="#4c8bc9")
    ax1.bar(sources, pos, bottom=neg, label="finding", color="#d9653b")
    for i, (n, p) in enumerate(zip(neg, pos, strict=True)):
        ax1.text(i, n + p, f"{n + p}", ha="center", va="bottom", fontsize=9)
    ax1.set_ylabel("images (deduplicated, frontal)")
    ax1.set_title("Binary label per source")
    ax1.legend()
    top = [k for k, _ in Counter({k: v for k, v in findings.items()}).most_common(16)]
    names = [f"{s}: {f}" for s, f in top][::-1]
    ax2.barh(names, [findings[k] for k in top][::-1], color="#6a9f58")
    ax2.set_xscale("log")
    ax2.set_xlabel("images (log scale)")
    ax2.set_title("Findings per source (top 16)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return findings
