"""RewardTrainer (a transformers.Trainer) and `hfx run plugin=reward` on a tiny Llama and a learnable toy ranking.

Toy data: each completion is 4 words drawn from a small pool; its true score is (#"true") - (#"false") and
the ranking follows it (ties declared). A model that learns the rule ranks held-out pairs correctly, so
accuracy well above chance (0.5) shows that the ranking loss trains the score head and the trunk.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, TrainingArguments

import hfx
from hfx.errors import HfxError
from hfx.testing import tiny_model
from hfx_plugins.reward import RewardConfig, score_texts

POOL = ["true", "false", "value", "list", "name", "module"]


def toy_rankings(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        comps = [" ".join(rng.choice(POOL) for _ in range(4)) for _ in range(4)]
        gold = [c.split().count("true") - c.split().count("false") for c in comps]
        ranking = [sum(o > g for o in gold) for g in gold]
        if len(set(ranking)) == 1:
            continue
        rows.append({"prompt": "the answer : ", "completions": comps, "ranking": ranking,
                     "ties": len(set(ranking)) < 4, "gold": [float(g) for g in gold]})
    return rows


def _args(tmp_path: Path, steps: int, **kw) -> TrainingArguments:
    return TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=steps, per_device_train_batch_size=8,
                             learning_rate=3e-3, report_to="none", save_strategy="no", logging_steps=1000,
                             use_cpu=True, disable_tqdm=True, **kw)


def test_reward_trainer_learns_the_toy_ranking(tmp_path: Path) -> None:
    model, tok = tiny_model("llama", "causal-lm", 0, dropout=0.0)
    trainer = hfx.RewardTrainer(model=model, args=_args(tmp_path, 24), train_dataset=toy_rankings(160, 0),
                                eval_dataset=toy_rankings(40, 1), processing_class=tok)
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_accuracy"] > max(0.85, before["eval_accuracy"] + 0.2), (before, after)
    assert after["eval_spearman"] > 0.7
    # the final shift: mean score over the distinct training texts is 0
    texts = list(dict.fromkeys(r["prompt"] + c for r in toy_rankings(160, 0) for c in r["completions"]))
    assert abs(score_texts(trainer.model, tok, texts).mean().item()) < 1e-4


def test_pairwise_rows_and_pairwise_loss(tmp_path: Path) -> None:
    model, tok = tiny_model("llama", "base", 0, dropout=0.0)
    pairs = hfx.rankings_to_pairs(toy_rankings(160, 0))
    trainer = hfx.RewardTrainer(model=model, args=_args(tmp_path, 20), train_dataset=pairs,
                                eval_dataset=toy_rankings(40, 1), processing_class=tok,
                                reward_config=RewardConfig(loss_type="pairwise", center_rewards_coefficient=0.01))
    trainer.train()
    assert trainer.evaluate()["eval_accuracy"] > 0.8


def test_nan_score_stops_with_the_step(tmp_path: Path) -> None:
    model, tok = tiny_model("llama", "base", 0)
    model = hfx.apply(model, "reward")
    with torch.no_grad():
        model.score.weight.fill_(float("inf"))
        model.score.weight[0, 0] = -float("inf")
    trainer = hfx.RewardTrainer(model=model, args=_args(tmp_path, 2), train_dataset=toy_rankings(16, 0),
                                processing_class=tok)
    with pytest.raises(HfxError, match="reward score is nan at step 1"):
        trainer.train()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("checkpoint-*"))


def test_hfx_run_trains_saves_and_reports(cli: Callable, tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for split, (n, seed) in {"train": (48, 0), "test": (16, 1)}.items():
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in toy_rankings(n, seed)))
    out = tmp_path / "runs"
    res = cli("run", "plugin=reward", f"model={tiny_llama_dir}", f"data.path={data}", "train.max_steps=3",
              "train.batch_size=4", "reward.max_length=32", f"output_dir={out}")
    assert res.code == 0, res.err[-2000:]
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    summary = json.loads((run / "summary.json").read_text())
    assert {"accuracy", "spearman", "margin"} <= set(summary["after"])
    hf = AutoModelForSequenceClassification.from_pretrained(run / "artifacts" / "model")
    assert hf.config.num_labels == 1 and (run / "artifacts" / "model" / "hfx_reward.json").is_file()


def test_skipping_the_first_evaluation_trains_the_same_model(tiny_llama_dir: Path, tmp_path: Path) -> None:
    # ppo trains its reward model with train.eval_before=false; the reward evaluation draws no random numbers,
    # so the model (and the evaluation after) must be identical to that of a run that evaluates first.
    from safetensors.torch import load_file

    from hfx.runner.run import run

    data = tmp_path / "data"
    data.mkdir()
    for split, (n, seed) in {"train": (24, 0), "test": (8, 1)}.items():
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in toy_rankings(n, seed)))
    args = ["plugin=reward", f"model={tiny_llama_dir}", f"data.path={data}", "train.max_steps=3",
            "train.batch_size=4", "reward.max_length=32"]
    full = run([*args, f"run_dir={tmp_path / 'full'}"])
    skipped = run([*args, "train.eval_before=false", f"run_dir={tmp_path / 'skipped'}"])
    assert full.before and skipped.before == {} and skipped.after == full.after
    weights = [load_file(r.run_dir / "artifacts" / "model" / "model.safetensors") for r in (full, skipped)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
