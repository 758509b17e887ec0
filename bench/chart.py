"""bench/results.png: drain throughput over time, latency percentiles per rate, and the
daemon's memory, drawn with matplotlib (the ``bench`` extra); without it, no chart."""

from __future__ import annotations

from math import nan
from pathlib import Path

from bench.report import ChartData


def draw(data: ChartData, path: Path, title: str) -> str | None:
    """Write the PNG; returns why not when it cannot (matplotlib missing, nothing to draw)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (`pip install -e '.[bench]'`, as `make bench` does)"
    panels = [p for p, has in (("throughput", data.throughput), ("latency", data.latency),
                               ("rss", data.rss)) if has]
    if not panels:
        return "nothing measured that has a chart"
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.6 * len(panels)), squeeze=False)
    for ax, panel in zip(axes[:, 0], panels, strict=True):
        if panel == "throughput":
            for series in data.throughput:
                if not series.points:
                    continue
                xs = [x for x, _ in series.points]
                ys = [y for _, y in series.points]
                if len(xs) == 1 or series.style != "--":  # close the last 1 s bucket
                    xs.append(xs[-1] + 1.0)
                    ys.append(ys[-1])
                ax.plot(xs, ys, series.style, label=series.label, drawstyle="steps-post")
            ax.set_title("P3 drain throughput (per 1 s bucket)")
            ax.set_xlabel("seconds since the start of each run")
            ax.set_ylabel("events/s")
            ax.legend(fontsize="small")
        elif panel == "latency":
            from matplotlib.ticker import NullFormatter, ScalarFormatter

            slots = list(range(len(data.latency)))
            for name, color in (("p50", "tab:blue"), ("p95", "tab:orange"), ("p99", "tab:red")):
                ax.plot(slots, [bar.ours.get(name, nan) for bar in data.latency], "o-", color=color,
                        label=f"pgconnector {name}")
                ax.plot(slots, [bar.reference.get(name, nan) for bar in data.latency], "s--",
                        color=color, alpha=0.5, label=f"reference {name} (publish after COMMIT)")
            ax.set_xticks(slots, [bar.label for bar in data.latency])
            ax.set_yscale("log")
            values = [v for bar in data.latency for v in (*bar.ours.values(),
                                                           *bar.reference.values())]
            if values:
                ax.set_yticks([t for t in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500)
                               if min(values) / 2 <= t <= max(values) * 2])
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_title("P4 latency, commit → Redis subscriber, per rate")
            ax.set_ylabel("ms (log scale)")
            ax.legend(fontsize="small", ncol=2)
        else:
            for series in data.rss:
                ax.plot([x for x, _ in series.points], [y for _, y in series.points],
                        series.style, label=series.label)
            if data.outage is not None:
                ax.axvspan(*data.outage, color="red", alpha=0.1, label="Redis down")
            ax.set_title("P5 daemon RSS")
            ax.set_xlabel("seconds since the start of each run")
            ax.set_ylabel("MB")
            ax.set_ylim(bottom=0)
            ax.legend(fontsize="small")
        ax.grid(True, alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None
