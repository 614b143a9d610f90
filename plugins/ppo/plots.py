"""What a PPO run shows: the curves of each update and the held-out answers before and after, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hfx.runner.report import save_figure

__all__ = ["plot_ppo_curves", "print_answers"]


def plot_ppo_curves(history: list[dict[str, float]], path: Path, title: str) -> Path:
    """Four panels against the update: proxy reward and gold score; KL to the reference; entropy; clip fraction."""
    import matplotlib

    matplotlib.use("Agg")  # no screen on these machines
    import matplotlib.pyplot as plt

    x = [r["step"] for r in history]
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    ax = axes[0]
    ax.plot(x, [r["proxy_reward"] for r in history], label="proxy reward (reward model)")
    ax.set_ylabel("proxy reward")
    twin = ax.twinx()
    twin.plot(x, [r["gold"] for r in history], color="tab:orange", label="gold (VADER compound)")
    twin.set_ylabel("gold")
    ax.legend(loc="upper left", fontsize=8)
    twin.legend(loc="lower right", fontsize=8)
    for ax, key, label in ((axes[1], "kl", "KL to reference (nats / response)"), (axes[2], "entropy", "entropy (nats / token)"),
                           (axes[3], "clipfrac", "policy clip fraction")):
        ax.plot(x, [r[key] for r in history])
        ax.set_title(label, fontsize=10)
    for ax in axes:
        ax.set_xlabel("PPO update")
        ax.grid(alpha=0.3)
    return save_figure(fig, path, title)


def print_answers(rows: list[dict[str, Any]], shown: int, method: str = "PPO") -> None:
    """A table of the first ``shown`` held-out prompts with their first answer before and after ``method``
    (ppo, grpo and dpo runs print their held-out answers with it), each cut to 160 characters."""
    from hfx.tables import print_table
    from hfx_plugins.ppo.gold import vader_scores

    table = []
    for row in rows[:shown]:
        b, a = row["before"][0], row["after"][0]
        gb, ga = vader_scores([b, a])
        question = row["prompt"].rsplit("user\n", 1)[-1].replace("assistant", "").strip()
        table.append({"prompt": question[:80], "before": f"[{gb:+.2f}] {b[:160]}", "after": f"[{ga:+.2f}] {a[:160]}"})
    print_table(f"held-out answers before and after {method} (first {shown}; gold = VADER compound)", table,
                min_width=160)
