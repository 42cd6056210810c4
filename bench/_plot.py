"""Bar charts of benchmark medians, for the documentation (needs matplotlib)."""

from __future__ import annotations

from pathlib import Path


def bar_chart(path: str | Path, title: str, groups: dict[str, dict[str, float]],
              unit: str, highlight: str = "aunshare", log: bool = False) -> None:
    """One group of bars per key of ``groups`` (e.g. parent size), one bar
    per peer; peers whose name starts with ``highlight`` are drawn darker;
    ``log`` for a logarithmic axis."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peers = list(dict.fromkeys(p for values in groups.values() for p in values))
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 0.45 * len(peers) + 1.6),
                             squeeze=False)
    for ax, (group, values) in zip(axes[0], groups.items()):
        names = [p for p in peers if p in values]
        nums = [values[p] for p in names]
        colors = ["#1f5f99" if p.startswith(highlight) else "#9bb7d4" for p in names]
        bars = ax.barh(names, nums, color=colors)
        ax.invert_yaxis()
        ax.set_title(group, fontsize=10)
        ax.set_xlabel(unit)
        if log:  # one slow peer would flatten every other bar
            ax.set_xscale("log")
        ax.bar_label(bars, fmt="%.0f", padding=3, fontsize=8)
        ax.margins(x=0.18)
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
