"""How ppo reaches lora and reward: the lora section of its run, and the reward plugin's default model."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from hfx.errors import HfxError


def test_plugin_ppo_runs_lora_then_ppo_with_the_policy_adapter_of_its_preset() -> None:
    from hfx.config.compose import compose

    cfg, plugins = compose(["plugin=ppo"])
    assert [p.name for p in plugins] == ["lora", "ppo"]  # ppo requires lora and its preset sets lora:
    assert (cfg.lora.r, cfg.lora.lora_alpha, list(cfg.lora.target_modules)) == (
        16, 32.0, ["q_proj", "k_proj", "v_proj", "o_proj"])  # the adapter the default run was measured with
    assert cfg.data.path != "instructions"  # lora's own preset (for lora's own runs) is not loaded
    assert compose(["plugin=ppo", "lora.r=8"])[0].lora.r == 8  # the one way to set the policy's rank
    explicit, _ = compose(["plugin=[lora,ppo]"])
    assert (explicit.lora.r, explicit.lora.lora_alpha) == (16, 32.0)  # the same adapter when lora is named


@pytest.mark.parametrize(("old", "new"), [("lora_r", "lora.r"), ("lora_alpha", "lora.lora_alpha"),
                                          ("lora_target_modules", "lora.target_modules")])
def test_the_old_ppo_lora_fields_name_their_new_key(old: str, new: str) -> None:
    from hfx.config.compose import compose

    with pytest.raises(HfxError, match=rf"unknown config key 'ppo\.{old}'.*did you mean '{new}'") as err:
        compose(["plugin=ppo", f"ppo.{old}=8"])
    assert "\n" not in str(err.value)


def test_the_default_policy_is_the_one_built_before_the_lora_section(tmp_path: Path) -> None:
    # Before the lora section, the recipe built the policy as hfx.apply(lora, r=16, lora_alpha=32, q/k/v/o) then
    # hfx.apply(ppo, <PPOConfig fields of the preset>); the run's plugins must give the same weights from one seed.
    import dataclasses

    import hfx
    from hfx import api
    from hfx.config.compose import compose, typed
    from hfx.protocols import config_of
    from hfx.testing import tiny_model
    from hfx_plugins.lora import LoraConfig
    from hfx_plugins.ppo import PPOConfig

    cfg, plugins = compose(["plugin=ppo"])
    _, cfgs = typed(cfg, plugins)
    torch.manual_seed(0)
    model = tiny_model("llama", "causal-lm", 0)[0]
    for p in plugins:
        model = api.apply(model, p.name, cfg=cfgs[p.name])
    torch.manual_seed(0)
    before = tiny_model("llama", "causal-lm", 0)[0]
    before = hfx.apply(before, "lora", r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    before = hfx.apply(before, "ppo", **{f.name: getattr(cfgs["ppo"], f.name) for f in dataclasses.fields(PPOConfig)})
    got, want = model.state_dict(), before.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    lora_fields = [f.name for f in dataclasses.fields(LoraConfig)]  # alpha is in no weight: compare the configs
    assert [getattr(config_of(model, "lora"), n) for n in lora_fields] == [
        getattr(config_of(before, "lora"), n) for n in lora_fields]
    hfx.save(model, tmp_path / "policy")  # the run's config (updates, prompts, ...) is not written with the head
    saved = json.loads((tmp_path / "policy" / "ppo" / "ppo_config.json").read_text())
    assert set(saved) == {f.name for f in dataclasses.fields(PPOConfig)}


def test_the_default_reward_model_key_is_unchanged() -> None:
    # The cache key ppo has always used: reward-<model>-seed<seed>-<fingerprint of the reward preset's values and
    # the bundled rankings>. A new value here means a changed reward preset or ranking set (a new model is trained).
    from hfx_plugins.ppo.rewards import cached_reward_dir

    assert cached_reward_dir("smollm2-135m", 0).name == "reward-smollm2-135m-seed0-9844c56a24"


def test_train_default_model_is_the_reward_run_and_keeps_the_random_state(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from hfx.runner.run import run
    from hfx.testing import save_tiny_model
    from hfx_plugins.reward import train_default_model

    rng, pool = random.Random(0), ["true", "false", "maybe", "so"]
    data = tmp_path / "data"
    data.mkdir()
    for split, n in (("train", 12), ("test", 4)):
        rows = []
        for _ in range(n):
            comps = [" ".join(rng.choice(pool) for _ in range(3)) for _ in range(3)]
            rows.append({"prompt": "answer: ", "completions": comps, "ranking": [0, 1, 2]})
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    overrides = [f"model={save_tiny_model(tmp_path / 'm', 'llama', 'base')}", f"data.path={data}",
                 "train.max_steps=2", "train.batch_size=4", "reward.max_length=16"]
    torch.manual_seed(5)
    result = train_default_model(tmp_path / "cache" / "rm", seed=3, overrides=overrides)
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(3))  # the random state is the one it found
    direct = run(["plugin=reward", "seed=3", "train.eval_before=false", f"run_dir={tmp_path / 'direct'}", *overrides])
    assert result.after == direct.after
    ours = load_file(tmp_path / "cache" / "rm" / "model.safetensors")
    theirs = load_file(direct.run_dir / "artifacts" / "model" / "model.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
