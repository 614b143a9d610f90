"""``hfx validate plugin=grpo``: hfx's GRPO and RLOO against trl 1.16's ``GRPOTrainer`` and ``RLOOTrainer``.

Two kinds of rows:

- **loss formula**: trl's ``GRPOTrainer._compute_loss`` / ``RLOOTrainer._compute_loss`` (``trl/trainer/
  grpo_trainer.py``, ``rloo_trainer.py``) called unbound on a stand-in trainer (the attributes they read) whose
  ``_get_per_token_logps_and_entropies`` returns given log-probs, against :func:`~hfx_plugins.grpo.losses.grpo_loss`
  / :func:`~hfx_plugins.grpo.losses.rloo_loss` on the same random log-probs, advantages and masks. trl returns the
  aggregated loss only: the per-token losses are read one token at a time (a mask with that token alone,
  ``loss_type="bnpo"``), RLOO's per-completion losses one completion at a time;
- **one update**: the same tiny random Llama with the same LoRA initialisation (``hfx.testing.reference_twin``),
  trained one update by trl (its sampler replaced by one that returns fixed completions: EOS at various places,
  one without EOS) and by :class:`~hfx_plugins.grpo.trainer.GRPOTrainer` given the same completions, with plain
  SGD (the update is the gradient itself) and a reward function of the completion's ids; the advantages, the
  loss of each optimizer step and the LoRA weights are compared.
"""

from __future__ import annotations

import contextlib
import functools
import io
import tempfile
import warnings
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import torch

from hfx.validate import Check
from hfx_plugins.grpo.losses import grpo_loss, rloo_loss

__all__ = ["COMPLETIONS", "PROMPTS", "TOL", "checks", "formula_diffs", "one_update_diffs", "reward_of"]

TOL = 1e-5
PROMPTS = ["the function returns", "a class has"]  # 4 tokens each (BOS + 3): no padding, see trainer.py
EOS = 3  # hfx.testing's tiny tokenizer
COMPLETIONS = [[17, 40, 3], [17, 41, 52, 60, 11, 3], [88, 3], [9, 10, 11, 12, 13, 14],  # 6 = max_completion_length
               [3], [70, 71, 72, 3], [5, 5, 3], [90, 91, 92, 93, 3]]


def reward_of(ids: list[int]) -> float:
    """A reward of a completion's ids (EOS included) that no group ties on."""
    return (sum(ids) % 7) / 3.0 - 0.25 * len(ids)


def _accelerator() -> SimpleNamespace:
    return SimpleNamespace(gather=lambda x: x, gather_for_metrics=lambda x: x, reduce=lambda x, reduction: x,
                           num_processes=1, device=torch.device("cpu"), sync_gradients=True)


def _stand_in(logps: torch.Tensor, **attrs: Any) -> SimpleNamespace:
    return SimpleNamespace(_get_per_token_logps_and_entropies=lambda *a, **k: (logps, torch.zeros_like(logps), None),
                           accelerator=_accelerator(), model=SimpleNamespace(training=True), aux_loss_enabled=False,
                           _metrics={"train": defaultdict(list), "eval": defaultdict(list)}, **attrs)


def _trl_grpo(logps: torch.Tensor, inputs: dict[str, torch.Tensor], loss_type: str, beta: float, eps: float,
              eps_high: float, max_len: int, bias_correction: bool) -> torch.Tensor:
    from trl import GRPOTrainer

    stand_in = _stand_in(logps, top_entropy_quantile=1.0, off_policy_mask_threshold=None, beta=beta,
                         importance_sampling_level="token", loss_type=loss_type, epsilon_low=eps,
                         epsilon_high=eps_high, use_vllm=False, vllm_importance_sampling_correction=False,
                         current_gradient_accumulation_steps=1, max_completion_length=max_len,
                         _entropy_bonus_enabled=False,
                         args=SimpleNamespace(use_bias_correction_kl=bias_correction, delta=None, steps_per_generation=1))
    return GRPOTrainer._compute_loss(stand_in, None, inputs)


def _trl_rloo(logps: torch.Tensor, inputs: dict[str, torch.Tensor], eps: float, eps_high: float) -> torch.Tensor:
    from trl import RLOOTrainer

    return RLOOTrainer._compute_loss(_stand_in(logps, epsilon_low=eps, epsilon_high=eps_high), None, inputs)


@functools.cache
def formula_diffs(estimator: str, loss_type: str = "dapo", beta: float = 0.0, bias_correction: bool = True
                  ) -> dict[str, float]:
    """``{"per_token", "loss"}``: largest |hfx - trl| of the per-token (RLOO: per-completion) losses and the loss."""
    g = torch.Generator().manual_seed(0)
    b, t, eps, eps_high = 6, 5, 0.2, 0.28
    logps = -torch.rand(b, t, generator=g) * 3  # (B, T)
    old = logps + torch.randn(b, t, generator=g) * 0.3  # ratios on both sides of the clip range
    ref = logps + torch.randn(b, t, generator=g) * 0.5
    adv = torch.randn(b, generator=g)
    mask = (torch.arange(t) < torch.tensor([5, 3, 1, 4, 5, 2]).unsqueeze(1)).long()  # (B, T)
    num_items = float(mask.sum())

    def inputs(m: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"prompt_ids": torch.ones(b, 1, dtype=torch.long), "prompt_mask": torch.ones(b, 1, dtype=torch.long),
                "completion_ids": torch.ones(b, t, dtype=torch.long), "completion_mask": m, "advantages": adv,
                "old_per_token_logps": old, "ref_per_token_logps": ref, "num_items_in_batch": torch.tensor(num_items),
                "old_logps": (old * mask).sum(1)}

    if estimator == "rloo":
        mine, per_seq, _ = rloo_loss(logps, old, adv, mask, eps, eps_high)
        theirs = [_trl_rloo(logps[i:i + 1], {k: v[i:i + 1] if v.dim() else v for k, v in inputs(mask).items()},
                            eps, eps_high) for i in range(b)]
        return {"per_token": (per_seq - torch.stack(theirs)).abs().max().item(),
                "loss": (mine - _trl_rloo(logps, inputs(mask), eps, eps_high)).abs().item()}
    mine, per_token, _ = grpo_loss(logps, old, adv, mask, eps, eps_high, loss_type, beta, ref, t, num_items,
                                   bias_correction)
    worst = 0.0
    for i, j in mask.nonzero().tolist():
        one = torch.zeros_like(mask)
        one[i, j] = 1
        theirs = _trl_grpo(logps, inputs(one), "bnpo", beta, eps, eps_high, t, bias_correction)
        worst = max(worst, (per_token[i, j] - theirs).abs().item())
    total = _trl_grpo(logps, inputs(mask), loss_type, beta, eps, eps_high, t, bias_correction)
    return {"per_token": worst, "loss": (mine - total).abs().item()}


@functools.cache
def one_update_diffs(estimator: str, loss_type: str = "dapo", beta: float = 0.0, scale_rewards: str = "group",
                     normalize_advantages: bool = False, num_iterations: int = 1, lr: float = 1.0
                     ) -> dict[str, float]:
    """``{"advantages", "loss", "weights", "moved"}``: |hfx - trl| after one update on fixed completions (and how
    far the LoRA weights moved, so that a step that changed nothing cannot pass unnoticed)."""
    import datasets
    from trl import GRPOConfig as TrlGRPOConfig
    from trl import GRPOTrainer as TrlGRPOTrainer
    from trl import RLOOConfig as TrlRLOOConfig
    from trl import RLOOTrainer as TrlRLOOTrainer

    from hfx.testing import reference_twin
    from hfx_plugins.grpo.config import GRPOConfig
    from hfx_plugins.grpo.trainer import GRPOTrainer

    ours, theirs, tok = reference_twin("llama", "lora", "LoraConfig", dropout=0.0,
                                       target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    temperature, g, t = 0.7, 4, 6
    seen: dict[str, list[Any]] = {"prompts": [], "advantages": [], "loss": []}

    def generate(self: Any, prompt_ids: list[list[int]], *args: Any, **kwargs: Any) -> Any:
        seen["prompts"].append([list(p) for p in prompt_ids])
        out = [list(c) for c in COMPLETIONS[:len(prompt_ids)]]
        return out if estimator == "rloo" else (out, None)

    def trl_reward(prompts: Any, completions: Any, completion_ids: list[list[int]], **kwargs: Any) -> list[float]:
        return [reward_of(list(c)) for c in completion_ids]

    cls, cfg_cls = (TrlRLOOTrainer, TrlRLOOConfig) if estimator == "rloo" else (TrlGRPOTrainer, TrlGRPOConfig)
    extra = {"normalize_advantages": normalize_advantages} if estimator == "rloo" else \
        {"loss_type": loss_type, "scale_rewards": scale_rewards}
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore")
        args = cfg_cls(output_dir=tmp, use_cpu=True, bf16=False, report_to=[], per_device_train_batch_size=2 * g,
                       num_generations=g, max_completion_length=t, temperature=temperature, beta=beta,
                       num_iterations=num_iterations, max_steps=num_iterations, optim="sgd", learning_rate=lr,
                       lr_scheduler_type="constant", max_grad_norm=0.0, save_strategy="no", seed=0,
                       disable_tqdm=True, logging_strategy="no", epsilon_high=0.28, **extra)
        trainer = cls(model=theirs, reward_funcs=trl_reward, args=args, processing_class=tok,
                      train_dataset=datasets.Dataset.from_list([{"prompt": p} for p in PROMPTS * 4]))
        score = trainer._generate_and_score_completions
        compute = trainer._compute_loss

        def scored(inputs: Any) -> Any:
            out = score(inputs)
            seen["advantages"].append(out["advantages"].detach().clone())
            return out

        def loss_of(model: Any, inputs: Any) -> Any:
            loss = compute(model, inputs)
            seen["loss"].append(loss.item())
            return loss

        trainer._generate_and_score_completions, trainer._compute_loss = scored, loss_of
        trainer._generate_single_turn = generate.__get__(trainer)
        with contextlib.redirect_stdout(io.StringIO()):  # trl's Trainer prints its run's metrics
            trainer.train()
    prompts = [seen["prompts"][0][i] for i in range(0, 2 * g, g)]  # trl's order: each prompt G times in a row
    responses = torch.full((2 * g, t), tok.pad_token_id)
    for i, c in enumerate(COMPLETIONS):
        responses[i, :len(c)] = torch.tensor(c)

    def hfx_reward(qr: torch.Tensor, am: torch.Tensor, ctx: int) -> torch.Tensor:
        return torch.tensor([reward_of(r[m.bool()].tolist()) for r, m in zip(qr[:, ctx:], am[:, ctx:], strict=True)])

    cfg = GRPOConfig(estimator=estimator, learning_rate=lr, num_generations=g, batch_size=2 * g, beta=beta,
                     epsilon_high=0.28, loss_type=loss_type, scale_rewards=scale_rewards, temperature=temperature,
                     normalize_advantages=normalize_advantages, max_completion_length=t, max_grad_norm=0.0,
                     num_iterations=num_iterations)
    params = [p for p in ours.parameters() if p.requires_grad]
    sgd = torch.optim.SGD(params, lr=lr)
    constant = torch.optim.lr_scheduler.LambdaLR(sgd, lambda step: 1.0)  # trl's lr_scheduler_type="constant"
    hfx = GRPOTrainer(cfg, tok, ours, reward_model=hfx_reward, optimizers=(sgd, constant), num_updates=1)
    hfx.step(prompts, responses)
    losses = hfx.step_losses
    mine = {k.replace(".default", ""): v for k, v in ours.state_dict().items() if "lora_" in k}
    peft = {k.replace("base_model.model.", "").replace(".default", ""): v for k, v in theirs.state_dict().items()
            if "lora_" in k and ".ref." not in k}
    if set(mine) != set(peft):
        raise RuntimeError(f"LoRA tensors differ by name: {sorted(set(mine) ^ set(peft))[:4]}")
    return {"advantages": (hfx.last["advantages"] - seen["advantages"][0]).abs().max().item(),
            "loss": max(abs(a - b) for a, b in zip(losses, seen["loss"], strict=True)),
            "weights": max((mine[k] - peft[k]).abs().max().item() for k in mine),
            "moved": max(mine[k].abs().max().item() for k in mine if "lora_B" in k)}  # B starts at zero


UPDATES = {  # name -> one_update_diffs arguments
    "grpo dapo beta=0.04 (2 iterations)": ("grpo", "dapo", 0.04, "group", False, 2),
    "grpo grpo scale_rewards=batch": ("grpo", "grpo", 0.0, "batch", False, 1),
    "grpo bnpo beta=0.04": ("grpo", "bnpo", 0.04, "group", False, 1),
    "grpo dr_grpo scale_rewards=none": ("grpo", "dr_grpo", 0.0, "none", False, 1),
    "rloo beta=0.05": ("rloo", "dapo", 0.05, "group", False, 1),
    "rloo normalize_advantages (2 iterations)": ("rloo", "dapo", 0.05, "group", True, 2),
}


def _update_diff(name: str, key: str) -> float:
    diffs = one_update_diffs(*UPDATES[name])
    if diffs["moved"] < 1e-4:
        raise RuntimeError(f"the update moved the LoRA weights by only {diffs['moved']:.2e}: nothing was compared")
    return diffs[key]


def checks() -> list[Check]:
    """``hfx validate plugin=grpo``: the per-token losses and loss of each loss type, rloo's, and the advantages,
    loss and LoRA weights of one update vs trl's ``GRPOTrainer`` and ``RLOOTrainer``.
    """
    out = []
    for loss_type in ("grpo", "bnpo", "dr_grpo", "dapo"):
        for key in ("per_token", "loss"):
            what = "per-token losses" if key == "per_token" else "loss"
            out.append(Check(f"grpo {loss_type} beta=0.04: {what} vs trl GRPOTrainer._compute_loss",
                             "trl", TOL, lambda lt=loss_type, k=key: formula_diffs("grpo", lt, 0.04)[k]))
    out.append(Check("grpo dapo beta=0.04 use_bias_correction_kl=false: loss vs trl GRPOTrainer._compute_loss", "trl",
                     TOL, lambda: formula_diffs("grpo", "dapo", 0.04, False)["loss"]))
    for key in ("per_token", "loss"):
        what = "per-completion losses" if key == "per_token" else "loss"
        out.append(Check(f"rloo: {what} vs trl RLOOTrainer._compute_loss",
                         "trl", TOL, lambda k=key: formula_diffs("rloo")[k]))
    for name in UPDATES:
        for key in ("advantages", "loss", "weights"):
            trainer = "RLOOTrainer" if name.startswith("rloo") else "GRPOTrainer"
            out.append(Check(f"{name}: {key} of one update vs trl {trainer} (tiny Llama + LoRA)", "trl", TOL,
                             functools.partial(_update_diff, name, key)))
    return out
