"""Bar charts of benchmark medians, for the documentation (needs matplotlib)."""

from __future__ import annotations

from pathlib import Path

WIDTH_PX = 720  # the content column of the docs theme: an image shows at 1:1
DPI = 100


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

    # One group under the other, drawn at the docs' content width (WIDTH_PX):
    # side by side, three groups came out 1815 px wide and the page shrank
    # their labels to a few pixels.
    rows = [len(values) for values in groups.values()]
    heights = [0.32 * n + 0.75 for n in rows]
    fig, axes = plt.subplots(len(groups), 1, squeeze=False,
                             figsize=(WIDTH_PX / DPI, sum(heights) + 0.6),
                             gridspec_kw={"height_ratios": heights})
    for ax, (group, values) in zip(axes[:, 0], groups.items()):
        names = list(values)
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
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def main(argv: list[str]) -> None:
    """``python bench/_plot.py FIGURES.json OUT.png``: draw a chart again
    from saved medians (``{"title", "unit", "log", "groups"}``), e.g. after
    a change of layout, without re-running the benchmark."""
    import json

    if len(argv) != 2:
        raise SystemExit(main.__doc__)
    data = json.loads(Path(argv[0]).read_text())
    bar_chart(argv[1], data["title"], data["groups"], data["unit"], log=data.get("log", False))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
