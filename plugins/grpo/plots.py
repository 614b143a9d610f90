"""What a GRPO / RLOO run shows: the curves of each update (the held-out answers are printed by ppo's
``print_answers``)."""

from __future__ import annotations

from pathlib import Path

from hfx.runner.report import save_figure

__all__ = ["plot_grpo_curves"]

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
