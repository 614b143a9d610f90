"""The two inputs of ``hfx run plugin=ppo`` besides the policy: the prompts and the reward model.

The prompts are the ``prompt`` column of a ranking data set (the bundled ``rankings``: smollm2-135m's chat
template around a request for an opinion or a short review), tokenized as the reward plugin tokenizes the
scored texts, so the reward model reads ``prompt + response`` as it was trained to. The reward model comes
from the reward plugin's public names only: ``train_default_model`` to train one (what ``hfx run plugin=reward``
trains with its preset), ``load_reward_model`` to read one, ``score_texts`` to score re-tokenized text.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hfx.errors import HfxError
from hfx.io import cache_root

__all__ = ["EosAppendedReward", "cached_reward_dir", "load_prompts", "reward_model_for"]


def load_prompts(tokenizer: Any, cfg: Any, say: Callable[..., None]) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids of the train and held-out prompts (``cfg.prompts``: a bundled name or a folder with train/test).

    Prompts longer than ``cfg.max_prompt_length`` tokens keep their last tokens (the request and the
    assistant turn), with a note; the held-out ones are the first ``cfg.eval_prompts`` of the test split.
    """
    from hfx.data.loading import read_source

    splits = read_source(cfg.prompts)
    held = "test" if "test" in splits else "eval" if "eval" in splits else None
    if "train" not in splits or held is None or "prompt" not in splits["train"].column_names:
        raise HfxError(f"ppo.prompts={cfg.prompts!r} needs train and test (or eval) splits with a 'prompt' column")
    out = []
    cut = 0
    for split in ("train", held):
        texts = list(dict.fromkeys(splits[split]["prompt"]))  # one entry per prompt, in order
        ids = tokenizer(texts)["input_ids"]
        cut += sum(len(x) > cfg.max_prompt_length for x in ids)
        out.append([x[-cfg.max_prompt_length:] for x in ids])
    if cut:
        say(f"ppo: {cut} prompts longer than ppo.max_prompt_length={cfg.max_prompt_length} tokens keep their last tokens")
    return out[0], out[1][: cfg.eval_prompts]


def cached_reward_dir(model: str, seed: int) -> Path:
    """Where the default reward model of ``model`` is cached: ``$HFX_CACHE/ppo/reward-<model>-seed<seed>-<recipe>``.

    ``<recipe>`` is the reward plugin's ``default_recipe_fingerprint()``: a changed reward preset or ranking set
    trains a new model instead of reusing one trained by the old recipe.
    """
    from hfx_plugins.reward import default_recipe_fingerprint

    return cache_root() / "ppo" / f"reward-{model.replace('/', '_')}-seed{seed}-{default_recipe_fingerprint()}"


def _train_reward(target: Path, say: Callable[..., None], seed: int) -> Path:
    """Train the reward plugin's default reward model into ``target`` (its ``train_default_model``)."""
    from hfx_plugins.reward import train_default_model

    say("ppo: no reward model given or cached: training one first (hfx run plugin=reward, its defaults)")
    # The random state is put back after it, so PPO draws the same rollouts as a later run that finds it cached.
    result = train_default_model(target, seed)
    say(f"ppo: reward model cached at {target} (trained in {result.run_dir}: {result.after})")
    return target


class TextReward:
    """Scores ``prompt + response`` as text with the reward model's own tokenizer (when it differs from the policy's)."""

    def __init__(self, model: Any, tokenizer: Any, policy_tokenizer: Any) -> None:
        self.model, self.tokenizer, self.policy_tokenizer = model, tokenizer, policy_tokenizer

    def __call__(self, query_responses: Any, attention_mask: Any, context_length: int) -> Any:
        """(B,) scores of the decoded (B, S) prompt + response ids, re-tokenized by the reward model's tokenizer.

        ``context_length`` is unused: the whole text (prompt and response) is scored, as the reward model was
        trained on it.
        """
        from hfx_plugins.reward import score_texts

        texts = [self.policy_tokenizer.decode(ids[m.bool()].tolist()) for ids, m in zip(query_responses, attention_mask,
                                                                                        strict=True)]
        return score_texts(self.model, self.tokenizer, texts)


def reward_model_for(spec: str, tokenizer: Any, ctx: Any) -> Any:
    """The reward model named by ``ppo.reward_model``: "vader" (the gold score), a folder, or "" (cached/trained).

    A reward model with the policy's vocabulary reads the rollout's token ids directly (its score at the last
    real token of the attention mask); one with another tokenizer gets the decoded text, re-tokenized.
    """
    if spec == "vader":
        from hfx_plugins.ppo.gold import VaderReward

        ctx.print("ppo: reward = VADER's compound score itself (an oracle run: no reward model)")
        return VaderReward(tokenizer)
    path = Path(spec).expanduser() if spec else cached_reward_dir(ctx.run.model, ctx.run.seed)
    if not spec and not path.is_dir():
        _train_reward(path, ctx.print, ctx.run.seed)
    if not path.is_dir():
        raise HfxError(f"ppo.reward_model={spec!r} is not a folder; give one written by hfx.save of the reward "
                       "plugin, or leave it empty to train one")
    from hfx.protocols import config_of
    from hfx_plugins.reward import load_reward_model

    model, rm_tokenizer = load_reward_model(path)
    model.requires_grad_(False).eval()
    if rm_tokenizer.get_vocab() != tokenizer.get_vocab():
        ctx.print(f"ppo: the reward model at {path} has another tokenizer: it scores the decoded text, re-tokenized")
        return TextReward(model, rm_tokenizer, tokenizer)
    ctx.print(f"ppo: reward model from {path}")
    reward_cfg = config_of(model, "reward")  # recorded by its loader
    if getattr(reward_cfg, "append_eos", False) and tokenizer.eos_token_id is not None:
        ctx.print("ppo: the reward model was trained on texts ending in EOS: a response cut at ppo.response_length is "
                  "scored with EOS appended")
        return EosAppendedReward(model, int(tokenizer.eos_token_id))
    return model


class EosAppendedReward:
    """Scores prompt + response as the reward model was trained to read it: ending in EOS.

    The reward plugin appends EOS to every text it trains on (``append_eos``, as trl's reward trainer does), so
    its score is learned at an EOS token. A rollout cut at ``response_length`` has no EOS; read at its last
    word instead, the score is another function. Measured on the bundled rankings' held-out answers cut to
    20 tokens, with the default reward model (seed 0): Spearman with VADER 0.56 with EOS appended, 0.32
    without, and the mean score 0.21 vs -0.91. trl scores the cut response as it is (and relies on
    ``missing_eos_penalty``); here EOS is appended for scoring only, the rollout itself is unchanged.
    """

    def __init__(self, model: Any, eos_token_id: int) -> None:
        self.model, self.eos_token_id = model, eos_token_id

    def __call__(self, query_responses: Any, attention_mask: Any, context_length: int) -> Any:
        """(B,) scores of (B, S) right-padded prompt + response ids; rows not ending in EOS get one appended."""
        import torch

        from hfx.pooling import last_token_index
        from hfx_plugins.ppo.rollout import last_token_scores

        b = query_responses.size(0)
        ids = torch.cat([query_responses, query_responses.new_full((b, 1), self.eos_token_id)], 1)  # (B, S + 1)
        mask = torch.cat([attention_mask, attention_mask.new_zeros(b, 1)], 1)  # (B, S + 1)
        last = last_token_index(mask)  # (B,)
        rows = torch.arange(b, device=ids.device)
        cut = ids[rows, last] != self.eos_token_id  # (B,) no EOS at the end
        ids[rows[cut], last[cut] + 1] = self.eos_token_id
        mask[rows[cut], last[cut] + 1] = 1
        return last_token_scores(self.model, ids, mask, context_length)
