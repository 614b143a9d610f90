"""``hfx run plugin=dpo`` end to end on a tiny Llama and a small ranking set; ``hfx validate plugin=dpo``."""

from __future__ import annotations

import json
from pathlib import Path

import hfx
from hfx.runner.run import run
from hfx.testing import save_tiny_model, tiny_model

WORDS = ["the function returns", "a class has", "import the module", "print the list", "a value is", "the loop ends"]


def _rankings(folder: Path) -> Path:
    folder.mkdir()
    for split, prompts in (("train", WORDS[:4]), ("test", WORDS[4:])):
        rows = [{"prompt": p + " ", "completions": ["good and great", "fine", "bad and sad"], "ranking": [0, 1, 2]}
                for p in prompts]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_dpo_run_on_a_tiny_model(tmp_path: Path) -> None:
    policy = save_tiny_model(tmp_path / "policy", "llama", "causal-lm")
    data = _rankings(tmp_path / "rankings")
    result = run([f"model={policy}", "plugin=dpo", f"output_dir={tmp_path / 'runs'}", f"data.path={data}",
                  "train.max_steps=2", "train.batch_size=2", "dpo.pairs=all", "dpo.eval_prompts=2",
                  "dpo.max_new_tokens=4", "lora.r=2", "lora.target_modules=[q_proj,v_proj]"])
    for key in ("gold", "gold_ci95", "kl", "reward_accuracy", "dpo_loss"):
        assert key in result.before and key in result.after
    assert abs(result.before["kl"]) < 1e-6  # LoRA's B starts at zero: the policy is its reference
    assert result.before["reward_accuracy"] == 0.0  # equal rewards are not counted as right (trl's strict >)
    assert result.after["kl"] != 0.0
    answers = json.loads((result.run_dir / "artifacts" / "answers.json").read_text())
    assert len(answers) == 2 and all(len(a["before"]) == len(a["after"]) == 2 for a in answers)
    hfx.load(tiny_model("llama")[0], result.run_dir / "artifacts" / "policy" / "adapter")


def test_validate_rows_pass() -> None:
    from hfx.validate import run_checks

    results = run_checks(["dpo"])
    assert len(results) == 9 and all(r.passed for r in results), [(r.name, r.max_diff, r.error) for r in results]


def test_gold_interval_is_students_t_over_prompts() -> None:
    import math

    import pytest
    from scipy import stats

    from hfx_plugins.dpo.recipe import gold_interval

    gold = [0.5, 0.1, -0.2, 0.0, 0.9, 0.7]  # 3 prompts x 2 answers: per-prompt means 0.3, -0.1, 0.8
    centre, half = gold_interval(gold, 2)
    per_prompt = [0.3, -0.1, 0.8]
    lo, hi = stats.t.interval(0.95, 2, loc=sum(per_prompt) / 3, scale=stats.sem(per_prompt))  # t_2 = 4.303
    assert centre == pytest.approx(sum(gold) / 6, abs=1e-15) and centre.n == 3
    assert half == pytest.approx((hi - lo) / 2, rel=1e-12)
    assert half > 1.96 * stats.tstd(per_prompt) / math.sqrt(3) * 2  # the normal 1.96 understated it 2.2-fold
    assert math.isnan(gold_interval([0.5, 0.1], 2)[1])  # one prompt: no interval


def test_dpo_proxy_reward_scores_the_held_out_answers(tmp_path: Path) -> None:
    """dpo.proxy_reward_model: the held-out answers' mean reward-model score, as ppo's evaluate computes it."""
    import argparse

    import torch

    from hfx_plugins.ppo import held_out_rollouts, last_token_scores, reward_model_for

    policy = save_tiny_model(tmp_path / "policy", "llama", "causal-lm")
    base, tok = tiny_model("llama", "base", seed=1)
    hfx.save(hfx.apply(base, "reward"), tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    data = _rankings(tmp_path / "rankings")
    result = run([f"model={policy}", "plugin=dpo", f"output_dir={tmp_path / 'runs'}", f"data.path={data}",
                  "train.max_steps=1", "train.batch_size=2", "dpo.eval_prompts=2", "dpo.max_new_tokens=4",
                  f"dpo.proxy_reward_model={tmp_path / 'rm'}", "lora.r=2", "lora.target_modules=[q_proj,v_proj]"])
    # By hand: the untrained policy (LoRA's B = 0: the base model) answers the same held-out prompts with the
    # same seed; the reward model, loaded as ppo loads it, scores each answer at its last real token.
    model, ptok = tiny_model("llama", "causal-lm")
    rm = reward_model_for(str(tmp_path / "rm"), ptok, argparse.Namespace(print=print))
    prompts = [ids for ids in ptok([w + " " for w in WORDS[4:]])["input_ids"]]
    scores = []
    for ro, _ in held_out_rollouts(model, lambda: (model, torch.no_grad()), prompts, 2, 4, 0.8, ptok.eos_token_id,
                                   ptok.pad_token_id, seed=1_000_003):
        scores += last_token_scores(rm, ro.query_responses, ro.attention_mask, ro.context_length).tolist()
    assert abs(result.before["proxy_reward"] - sum(scores) / len(scores)) < 1e-5
    assert "proxy_reward" in result.after
