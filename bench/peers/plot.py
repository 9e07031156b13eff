"""Draws the latency distributions of a ``bench.compare`` JSON file (peers venv: matplotlib).

bench/.venv-peers/bin/python bench/peers/plot.py RESULTS.json OUT.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(source, target):
    with open(source) as f:
        data = json.load(f)
    fig, axes = plt.subplots(1, 2, figsize=(15, 6.5))
    panels = [
        ("latency", f"enqueue -> start at {data['options']['rate']} jobs/s (ms, log)"),
        ("delayed", "delayed jobs: start - due (ms, log)"),
    ]
    for ax, (key, title) in zip(axes, panels, strict=True):
        for system in data["systems"]:
            q = data["results"][system]["pooled_quantiles"].get(key) or []
            if not q:
                continue
            ys = [100 * i / (len(q) - 1) for i in range(len(q))]
            xs = [max(v, 0.01) for v in q]
            style = "-" if system.startswith("taskmill") else "--"
            width = 2.4 if system == "taskmill-pg-redis" else 1.3
            ax.plot(xs, ys, style, linewidth=width, label=system)
        ax.set_xscale("log")
        ax.set_xlabel(title)
        ax.set_ylabel("% of jobs started within x")
        ax.axhline(99, color="grey", linewidth=0.6, linestyle=":")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(
        f"{data['date']}: each system, one worker process; CDF pooled over "
        f"{data['options']['reps']} run(s); load avg at start {data['load_start']}"
    )
    fig.tight_layout()
    fig.savefig(target, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
