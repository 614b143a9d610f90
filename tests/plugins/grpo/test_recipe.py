"""``hfx run plugin=grpo`` end to end on tiny models: the reward model, curves, answers, the saved policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import hfx
from hfx.runner.run import run
from hfx.testing import save_tiny_model, tiny_model


@pytest.mark.parametrize("estimator", ["grpo", "rloo"])
def test_grpo_run_on_tiny_models(tmp_path: Path, estimator: str) -> None:
    policy = save_tiny_model(tmp_path / "policy", "llama", "causal-lm")
    base, tok = tiny_model("llama", "base", seed=1)
    hfx.save(hfx.apply(base, "reward"), tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    words = ["the function returns", "a class has", "import the module", "print the list", "a value is", "the loop ends"]
    for split, rows in (("train", words[:4]), ("test", words[4:])):
        (prompts / f"{split}.jsonl").write_text("".join(json.dumps({"prompt": w}) + "\n" for w in rows))
    result = run([f"model={policy}", "plugin=grpo", f"output_dir={tmp_path / 'runs'}", f"grpo.prompts={prompts}",
                  f"grpo.reward_model={tmp_path / 'rm'}", "grpo.updates=2", "grpo.batch_size=4",
                  "grpo.num_generations=2", f"grpo.estimator={estimator}", "grpo.beta=0.1",
                  "grpo.max_completion_length=4", "grpo.eval_prompts=2", "lora.r=2",
                  "lora.target_modules=[q_proj,v_proj]", "train.save_every=1"])
    for key in ("gold", "proxy_reward", "kl"):
        assert key in result.before and key in result.after
    assert abs(result.before["kl"]) < 1e-6  # LoRA's B starts at zero: the policy is its reference
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["after"]["gold_n"] == 2 and summary["after"]["gold_ci95_lo"] < summary["after"]["gold"]  # over prompts
    logged = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    per_update = [r for r in logged if "reward_std" in r]
    assert [r["step"] for r in per_update] == [1, 2] and all("gold" in r and "entropy" in r for r in per_update)
    assert (result.run_dir / "grpo_curves.png").is_file()
    answers = json.loads((result.run_dir / "artifacts" / "answers.json").read_text())
    assert len(answers) == 2 and all(len(a["before"]) == len(a["after"]) == 2 for a in answers)
    hfx.load(tiny_model("llama")[0], result.run_dir / "artifacts" / "policy" / "adapter")
    assert (result.run_dir / "checkpoints" / "step-000002").is_dir()
