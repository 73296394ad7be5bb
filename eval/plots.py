"""Cost-vs-quality plot of an offline evaluation (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: CI machines and the eval box have no display

import matplotlib.pyplot as plt  # noqa: E402  (must come after choosing the backend)
import numpy as np  # noqa: E402


def _short(model: str) -> str:
    return model.rsplit("/", 1)[-1]


def plot_pareto(results: Mapping[str, Any], path: str | Path, title: str | None = None) -> Path:
    """Single models as points, the zero-router hull, the oracle, best_single/random, and every
    strategy's λ-sweep curve (or its single point). Returns the written path."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(11, 6), dpi=120)

    singles = results.get("single_models", {})
    if singles:
        xs = [o["cost"] for o in singles.values()]
        ys = [o["quality"] for o in singles.values()]
        ax.scatter(xs, ys, color="0.45", s=22, zorder=3, label="single models")
        for model, o in singles.items():
            ax.annotate(
                _short(model),
                (o["cost"], o["quality"]),
                fontsize=6,
                color="0.35",
                xytext=(3, 2),
                textcoords="offset points",
            )

    base = results["baselines"]
    hull = np.asarray(base["zero_router"].get("hull") or [], dtype=float).reshape(-1, 2)
    if len(hull):
        aiq = base["zero_router"].get("aiq")
        label = "zero router (hull)" + (f", AIQ {aiq:.3f}" if aiq is not None else "")
        # Sample the segments densely so they stay true (linear-cost) interpolations on a log axis.
        hull_xs = (
            np.concatenate([np.linspace(a, b, 50) for a, b in zip(hull[:-1, 0], hull[1:, 0])])
            if len(hull) > 1
            else hull[:, 0]
        )
        ax.plot(
            hull_xs,
            np.interp(hull_xs, hull[:, 0], hull[:, 1]),
            linestyle="--",
            color="0.3",
            linewidth=1,
            label=label,
            zorder=2,
        )
    ax.scatter(
        [base["oracle"]["cost"]],
        [base["oracle"]["quality"]],
        marker="*",
        s=160,
        color="gold",
        edgecolor="black",
        zorder=5,
        label="oracle",
    )
    ax.scatter(
        [base["best_single"]["cost"]],
        [base["best_single"]["quality"]],
        marker="s",
        s=50,
        facecolor="none",
        edgecolor="black",
        zorder=4,
        label=f"best single ({_short(base['best_single']['model'])})",
    )
    ax.scatter(
        [base["random"]["cost"]], [base["random"]["quality"]], marker="x", s=50, color="black", zorder=4, label="random"
    )

    colours = plt.get_cmap("tab10")
    for k, (name, s) in enumerate(results.get("strategies", {}).items()):
        colour = colours(k % 10)
        curve = np.asarray(s.get("curve") or [], dtype=float).reshape(-1, 2)
        label = name + (f" (AIQ {s['aiq']:.3f})" if s.get("aiq") is not None else "")
        if len(curve) > 1:
            order = np.argsort(curve[:, 0], kind="stable")
            ax.plot(curve[order, 0], curve[order, 1], marker=".", color=colour, linewidth=1.3, label=label, zorder=4)
            ax.scatter(
                [s["cost"]],
                [s["quality"]],
                marker="o",
                s=55,
                facecolor="none",
                edgecolor=colour,
                linewidth=1.5,
                zorder=6,
            )
        else:
            ax.scatter([s["cost"]], [s["quality"]], marker="D", s=45, color=colour, label=label, zorder=6)

    unit = (
        "total cost over evaluated prompts ($)"
        if results.get("has_costs")
        else "cost (calls; table has no costs, every call costs 1)"
    )
    costs = [o["cost"] for o in singles.values() if o["cost"] > 0]
    if costs and max(costs) / min(costs) > 20:  # RouterBench prices span ~60x: linear axis crams the cheap ones
        ax.set_xscale("log")
        unit += ", log scale"
    ax.set_xlabel(unit)
    ax.set_ylabel("quality (mean score of the chosen model)")
    ax.set_title(title or f"Cost vs quality — {results.get('protocol', '')}, {results['n_test']} prompts", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
