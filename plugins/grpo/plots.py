"""What a GRPO / RLOO run shows: the curves of each update and the held-out answers before and after."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hfx.runner.report import save_figure

__all__ = ["plot_grpo_curves", "print_answers"]

PANELS = ((("proxy_reward", "gold"), "proxy reward (reward model) and gold (VADER)"),
          (("kl",), "KL to reference (nats / completion)"), (("entropy",), "entropy (nats / token)"),
          (("reward_std",), "std of the proxy reward in the batch"))


def plot_grpo_curves(history: list[dict[str, float]], path: Path, title: str) -> Path:
    """Four panels against the update: proxy reward and gold score; KL; entropy; the reward's spread."""
    import matplotlib

    matplotlib.use("Agg")  # no screen on these machines
    import matplotlib.pyplot as plt

    x = [r["step"] for r in history]
    fig, axes = plt.subplots(1, len(PANELS), figsize=(17, 3.8))
    for ax, (keys, label) in zip(axes, PANELS, strict=True):
        for key in keys:
            ax.plot(x, [r[key] for r in history], label=key)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("update")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return save_figure(fig, path, title)


def print_answers(rows: list[dict[str, Any]], shown: int, method: str) -> None:
    """A table of the first ``shown`` held-out prompts with their first answer before and after training."""
    from hfx.tables import print_table
    from hfx_plugins.ppo import vader_scores

    table = []
    for row in rows[:shown]:
        b, a = row["before"][0], row["after"][0]
        gb, ga = vader_scores([b, a])
        question = row["prompt"].rsplit("user\n", 1)[-1].replace("assistant", "").strip()
        table.append({"prompt": question[:80], "before": f"[{gb:+.2f}] {b}", "after": f"[{ga:+.2f}] {a}"})
    print_table(f"held-out answers before and after {method} (first {shown}; gold = VADER compound)", table,
                min_width=160)
