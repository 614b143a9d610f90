"""``hfx run plugin=ppo`` end to end on tiny models: reward model from the reward plugin, curves, answers, saved policy."""

from __future__ import annotations

import json
from pathlib import Path

import hfx
from hfx.runner.run import run
from hfx.testing import save_tiny_model, tiny_model


def test_ppo_run_on_tiny_models(tmp_path: Path) -> None:
    policy = save_tiny_model(tmp_path / "policy", "llama", "causal-lm")
    base, tok = tiny_model("llama", "base", seed=1)
    hfx.save(hfx.apply(base, "reward"), tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")  # the reward plugin's runs save the tokenizer beside the model
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    words = ["the function returns", "a class has", "import the module", "print the list", "a value is", "the loop ends"]
    for split, rows in (("train", words[:4]), ("test", words[4:])):
        (prompts / f"{split}.jsonl").write_text("".join(json.dumps({"prompt": w}) + "\n" for w in rows))
    result = run([f"model={policy}", "plugin=ppo", f"output_dir={tmp_path / 'runs'}", f"ppo.prompts={prompts}",
                  f"ppo.reward_model={tmp_path / 'rm'}", "ppo.updates=2", "ppo.batch_size=4", "ppo.num_mini_batches=2",
                  "ppo.response_length=4", "ppo.eval_prompts=2", "lora.r=2", "lora.target_modules=[q_proj,v_proj]",
                  "train.save_every=1"])
    for key in ("gold", "proxy_reward", "kl"):
        assert key in result.before and key in result.after
    assert abs(result.before["kl"]) < 1e-6  # LoRA's B starts at zero: the policy is its reference
    logged = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    per_update = [r for r in logged if "clipfrac" in r]
    assert [r["step"] for r in per_update] == [1, 2] and all("gold" in r and "entropy" in r for r in per_update)
    assert [r["step"] for r in logged if "eval_gold" in r] == [0, 2]  # the after-evaluation at the last update
    assert (result.run_dir / "ppo_curves.png").is_file()
    answers = json.loads((result.run_dir / "artifacts" / "answers.json").read_text())
    assert len(answers) == 2 and all(len(a["before"]) == len(a["after"]) == 2 for a in answers)
    loaded = hfx.load(tiny_model("llama")[0], result.run_dir / "artifacts" / "policy" / "adapter")
    assert hasattr(loaded, "ppo_value_head")
    assert (result.run_dir / "checkpoints" / "step-000002").is_dir()
