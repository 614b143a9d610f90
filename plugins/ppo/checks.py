"""``hfx validate plugin=ppo``: hfx's PPO update against trl 1.12.0's on tiny random models (seconds).

trl 1.12.0 is the last release with ``trl.experimental.ppo``; with any other trl installed every check says
"skipped: needs trl==1.12.0" (``pip install trl==1.12.0`` in a separate environment; ``tox -e ppo-ref``).

Both libraries get the same models (a tiny Llama policy, a different tiny Llama as explicit reference, one-label
sequence-classification reward and value models), the same prompts and the **same responses**: trl's sampler
(``batch_generation``) is replaced by one that returns fixed responses and the policy's temperature-scaled
logits on them, so nothing random differs. hfx runs with trl's conventions (``score_position="eos+1"``,
``value_model="separate"``). The tensors trl computes inside ``train`` are read from its frame: the per-token
rewards, values, returns and advantages when it whitens the advantages, the policy and value losses at each
optimizer step. Each check returns the largest absolute difference.
"""

from __future__ import annotations

import functools
import sys
import tempfile
from typing import Any

import torch

from hfx.validate import Check, SkipCheck, installed_version

__all__ = ["TOL", "TRL_VERSION", "checks", "parity_diffs", "trl_ppo_available"]

TOL = 1e-5
TRL_VERSION = "1.12.0"
# prompt length 5, response length 6; EOS at 2, none, at 0, at 5 (last position), at 3, ... (eos+1 edge cases)
_EOS_AT = [2, None, 0, 5, 3, None, 1, 4]


def trl_ppo_available() -> bool:
    """Whether the installed trl is 1.12.0 (the last release with ``trl.experimental.ppo``)."""
    return installed_version("trl") == TRL_VERSION


def _models() -> dict[str, Any]:
    from hfx.testing import tiny_model

    policy, tok = tiny_model("llama", seed=0, dropout=0.0)
    ref, _ = tiny_model("llama", seed=3, dropout=0.0)
    reward, _ = tiny_model("llama", "sequence-classification", seed=1, num_labels=1, dropout=0.0)
    value, _ = tiny_model("llama", "sequence-classification", seed=2, num_labels=1, dropout=0.0)
    return {"policy": policy, "ref": ref, "reward": reward, "value": value, "tok": tok}


def _rollout_data(tok: Any, length: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """(8, 5) distinct prompts and (8, 6) responses: EOS at _EOS_AT (pad after it), random tokens elsewhere."""
    g = torch.Generator().manual_seed(7)
    queries = torch.randint(10, 1000, (len(_EOS_AT), 5), generator=g)
    responses = torch.randint(10, 1000, (len(_EOS_AT), length), generator=g)
    for i, at in enumerate(_EOS_AT):
        if at is not None:
            responses[i, at] = tok.eos_token_id
            responses[i, at + 1:] = tok.pad_token_id
    return queries, responses


def _frame_with(*names: str) -> dict[str, Any]:
    """The locals of the nearest calling frame that defines all of ``names`` (trl's ``train``)."""
    frame = sys._getframe(2)
    while frame is not None and not all(n in frame.f_locals for n in names):
        frame = frame.f_back
    if frame is None:
        raise RuntimeError(f"no frame with {names}: trl's PPOTrainer.train changed")
    return frame.f_locals


def _run_trl(m: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    import datasets
    from trl.experimental.ppo import PPOConfig, PPOTrainer, ppo_trainer

    tok, queries, responses = m["tok"], *_rollout_data(m["tok"], fields["response_length"])
    by_query = {tuple(q.tolist()): r for q, r in zip(queries, responses, strict=True)}
    seen: dict[str, Any] = {"losses": []}

    def fixed_generation(model: Any, q: torch.Tensor, _bs: int, pad: int, gen: Any) -> tuple[torch.Tensor, torch.Tensor]:
        resp = torch.stack([by_query[tuple(row.tolist())] for row in q])
        qr = torch.cat([q, resp], 1)
        with torch.no_grad():  # what generate's scores hold: the logits divided by the temperature
            logits = ppo_trainer.forward(model, qr, pad).logits[:, q.size(1) - 1:-1] / gen.temperature
        seen["queries"], seen["responses"] = q.clone(), resp
        return qr, logits

    real_whiten = ppo_trainer.masked_whiten

    def spy_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
        out = real_whiten(values, mask, shift_mean)
        f = _frame_with("rewards", "values", "scores")
        if "returns" in f:  # the advantage call (the reward call comes before returns exist)
            seen.update({k: f[k].clone() for k in ("rewards", "values", "returns", "scores")})
            seen["advantages"] = out.masked_fill(~mask, 0)
        return out

    def spy_step(opt: Any, args: Any, kwargs: Any) -> None:
        f = _frame_with("pg_loss", "vf_loss")
        seen["losses"].append((f["pg_loss"].item(), f["vf_loss"].item()))

    cfg = PPOConfig(output_dir=tempfile.mkdtemp(prefix="hfx-ppo-trl-"), use_cpu=True, bf16=False, report_to=[],
                    per_device_train_batch_size=len(_EOS_AT), gradient_accumulation_steps=1,
                    total_episodes=len(_EOS_AT), num_sample_generations=0, stop_token="eos", save_strategy="no",
                    seed=0, **fields)
    data = datasets.Dataset.from_dict({"input_ids": queries.tolist()})
    trainer = PPOTrainer(cfg, tok, m["policy"], m["ref"], m["reward"], data, m["value"], eval_dataset=data)
    getattr(trainer.optimizer, "optimizer", trainer.optimizer).register_step_pre_hook(spy_step)  # under accelerate's
    ppo_trainer.batch_generation, ppo_trainer.masked_whiten = fixed_generation, spy_whiten
    try:
        trainer.train()
    finally:
        ppo_trainer.batch_generation, ppo_trainer.masked_whiten = _REAL[0], real_whiten
    return seen


_REAL: list[Any] = []


def _run_hfx(m: dict[str, Any], fields: dict[str, Any], queries: torch.Tensor, responses: torch.Tensor) -> dict[str, Any]:
    from hfx_plugins.ppo.config import PPOConfig
    from hfx_plugins.ppo.trainer import PPOTrainer

    hfx_fields = {k: (0.0 if v is None else v) for k, v in fields.items()}
    cfg = PPOConfig(batch_size=len(_EOS_AT), score_position="eos+1", value_model="separate", **hfx_fields)
    trainer = PPOTrainer(cfg, m["tok"], m["policy"], ref_model=m["ref"], reward_model=m["reward"],
                         value_model=m["value"], num_updates=1)
    trainer.step(queries, torch.ones_like(queries), responses)
    e = trainer.last
    return {"rewards": e.rewards, "values": e.values, "returns": e.returns, "advantages": e.advantages,
            "scores": e.scores, "losses": [(r["pg_loss"], r["vf_loss"]) for r in trainer.minibatch_losses]}


@functools.cache
def parity_diffs(kl_estimator: str = "k1", whiten_rewards: bool = False) -> dict[str, float]:
    """Largest |hfx - trl| of each quantity after one PPO update on the same fixed rollout (cached per setting)."""
    from trl.experimental.ppo import ppo_trainer

    if not _REAL:
        _REAL.append(ppo_trainer.batch_generation)
    fields = {"learning_rate": 5e-4, "num_ppo_epochs": 2, "num_mini_batches": 1, "response_length": 6,
              "temperature": 0.7, "kl_coef": 0.2, "kl_estimator": kl_estimator, "missing_eos_penalty": 1.0,
              "whiten_rewards": whiten_rewards, "cliprange": 0.2, "cliprange_value": 0.2, "vf_coef": 0.1,
              "gamma": 1.0, "lam": 0.95}
    ours, theirs = _models(), _models()
    torch.manual_seed(0)
    seen = _run_trl(theirs, fields)
    got = _run_hfx(ours, {**fields}, seen["queries"], seen["responses"])
    out = {k: (got[k] - seen[k]).abs().max().item() for k in ("rewards", "values", "returns", "advantages", "scores")}
    if len(got["losses"]) != len(seen["losses"]):
        raise RuntimeError(f"hfx took {len(got['losses'])} optimizer steps, trl {len(seen['losses'])}")
    out["pg_loss"] = max(abs(a[0] - b[0]) for a, b in zip(got["losses"], seen["losses"], strict=True))
    out["vf_loss"] = max(abs(a[1] - b[1]) for a, b in zip(got["losses"], seen["losses"], strict=True))
    diffs = []
    for name in ("policy", "value"):
        theirs_sd = theirs[name].state_dict()
        diffs += [(v - theirs_sd[k]).abs().max().item() for k, v in ours[name].state_dict().items()]
    out["weights"] = max(diffs)
    out["weights_moved"] = max((v - _models()["policy"].state_dict()[k]).abs().max().item()
                               for k, v in ours["policy"].state_dict().items())
    return out


def _diff(key: str, **setting: Any) -> float:
    if not trl_ppo_available():
        raise SkipCheck(f"needs trl=={TRL_VERSION} (installed: trl {installed_version('trl')}); pip install "
                        f"trl=={TRL_VERSION} in a separate environment, or tox -e ppo-ref")
    return parity_diffs(**setting)[key]


def checks() -> list[Check]:
    """``hfx validate plugin=ppo``: one update of hfx against trl 1.12.0's ``trl.experimental.ppo`` (see README).

    Each check is the largest absolute difference of one quantity over the same models, prompts and fixed
    responses (k1; then k3 with reward whitening), within ``TOL``. Without trl==1.12.0 each raises SkipCheck.
    """
    out = []
    for key, what in [("rewards", "per-token rewards (score at EOS+1, k1)"), ("advantages", "whitened advantages"),
                      ("returns", "returns"), ("values", "rollout values"), ("pg_loss", "policy loss, 2 epochs"),
                      ("vf_loss", "value loss, 2 epochs"), ("weights", "policy and value weights after one update")]:
        out.append(Check(f"{what} vs trl.experimental.ppo", "trl", TOL, functools.partial(_diff, key)))
    out.append(Check("per-token rewards, k3 + whiten_rewards", "trl", TOL,
                     functools.partial(_diff, "rewards", kl_estimator="k3", whiten_rewards=True)))
    out.append(Check("weights after one update, k3 + whiten_rewards", "trl", TOL,
                     functools.partial(_diff, "weights", kl_estimator="k3", whiten_rewards=True)))
    return out
