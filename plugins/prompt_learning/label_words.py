"""Classification by a causal language model's label words: the task of the prompt-learning recipes.

Each example becomes ``template.format(text=...)`` followed by the label word of its class (e.g.
``"Review: ... \\nSentiment:" + " positive"``). Training takes the next-token loss on the label word's tokens
only; evaluation scores every label word by its summed log-likelihood after the prompt and picks the largest,
as lm-evaluation-harness scores multiple choice (``acc``; context and continuation split as its
``_encode_pair`` splits them: trailing spaces of the context move to the continuation).

:class:`LabelWordRecipe` is the ``hfx run`` script of ``prompt_tuning`` and ``prefix_tuning`` (their recipes
subclass it and name their plugin): it trains only what the plugin added and reports accuracy and label loss
before and after, the trainable parameters and the training time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hfx import registry
from hfx.errors import HfxError
from hfx.io import atomic_dir
from hfx.registry import Recipe
from hfx.runner.loop import TrainLoop

__all__ = ["LabelWordRecipe", "collate", "encode_pair", "encode_rows", "label_word_scores"]


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids), split as lm-evaluation-harness's ``_encode_pair`` splits them."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = tokenizer.encode(context + continuation)
    ctx = tokenizer.encode(context)
    return ctx, whole[len(ctx):]


def encode_rows(tokenizer: Any, prompts: Sequence[str], words: Sequence[str], max_length: int) -> list[dict[str, list[int]]]:
    """Training examples: ``input_ids`` = prompt + word, ``labels`` = -100 on the prompt, the word's ids after it.

    A prompt longer than ``max_length`` loses its first tokens; the label word is never cut.

    Raises:
        HfxError: a label word with no tokens after its prompt.
    """
    rows = []
    for prompt, word in zip(prompts, words, strict=True):
        ctx, cont = encode_pair(tokenizer, prompt, word)
        if not cont:
            raise HfxError(f"the label word {word!r} has no tokens after {prompt[-40:]!r}; choose another label word")
        ctx = ctx[max(0, len(ctx) + len(cont) - max_length):]
        rows.append({"input_ids": ctx + cont, "labels": [-100] * len(ctx) + cont})
    return rows


def collate(pad_id: int) -> Any:
    """Right-pads ``input_ids`` (with ``pad_id``), ``attention_mask`` and ``labels`` (with -100) to the longest row."""

    def fn(rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        out = {"input_ids": torch.full((len(rows), width), pad_id), "attention_mask": torch.zeros(len(rows), width, dtype=torch.long),
               "labels": torch.full((len(rows), width), -100)}  # each (B, T)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            out["input_ids"][i, :n] = torch.tensor(r["input_ids"])
            out["attention_mask"][i, :n] = 1
            out["labels"][i, :n] = torch.tensor(r["labels"])
        return out

    return fn


@torch.no_grad()
def label_word_scores(model: nn.Module, tokenizer: Any, prompts: Sequence[str], label_words: Sequence[str],
                      batch_size: int = 32, max_length: int = 512) -> torch.Tensor:
    """Summed log-likelihood of each label word after each prompt, ``(N, C)`` in nats.

    The model must return logits aligned with ``input_ids`` (``(B, T, V)``), as hfx's prompt_tuning and
    prefix_tuning models and plain transformers models do.
    """
    pairs = [encode_pair(tokenizer, p, w) for p in prompts[:1] for w in label_words]
    if all(len(cont) == 1 for _, cont in pairs) and len({tuple(ctx) for ctx, _ in pairs}) == 1:
        return _one_token_scores(model, tokenizer, prompts, [cont[0] for _, cont in pairs], batch_size, max_length)
    rows = encode_rows(tokenizer, [p for p in prompts for _ in label_words], list(label_words) * len(prompts), max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    scores = []
    for start in range(0, len(rows), batch_size):
        batch = collate(pad)(rows[start:start + batch_size])
        logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
        logp = logits[:, :-1].float().log_softmax(-1)  # (B, T-1, V): position t predicts token t + 1
        target = batch["labels"][:, 1:].to(device)  # (B, T-1)
        picked = logp.gather(-1, target.clamp(min=0)[..., None])[..., 0] * (target != -100)
        scores.append(picked.sum(-1).cpu())  # (B,)
    return torch.cat(scores).view(len(prompts), len(label_words))


def _one_token_scores(model: nn.Module, tokenizer: Any, prompts: Sequence[str], word_ids: list[int],
                      batch_size: int, max_length: int) -> torch.Tensor:
    """Every label word is one token after the same context split: one forward pass per prompt, ``(N, C)``.

    Equal to the general path (the log-probability of each word's token at the prompt's last position), at
    1 / C of its cost.
    """
    contexts = [encode_pair(tokenizer, p, "x")[0][-max_length:] for p in prompts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    scores = []
    for start in range(0, len(contexts), batch_size):
        rows = [{"input_ids": c, "labels": c} for c in contexts[start:start + batch_size]]
        batch = collate(pad)(rows)
        last = batch["attention_mask"].sum(-1) - 1  # (B,) last real position (right padding)
        logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
        logp = logits[torch.arange(len(rows)), last.to(device)].float().log_softmax(-1)  # (B, V)
        scores.append(logp[:, word_ids].cpu())  # (B, C)
    return torch.cat(scores)


class LabelWordRecipe(Recipe):
    """setup -> evaluate -> train -> evaluate -> save for a plugin that adds trainable parameters to a causal LM.

    Subclasses set :attr:`plugin` (the config section holding ``template`` and ``label_words``).
    """

    plugin = ""

    def setup(self) -> None:
        """Load the causal LM, apply the run's plugins, build the label-word examples and the training loop.

        Raises:
            HfxError: no data, a label outside the label words, or a label word with no tokens.
        """
        ctx, run = self.ctx, self.ctx.run
        self.cfg = ctx.config(self.plugin)
        if not run.data.path:
            raise HfxError("no data given; set data.path=<bundled name or file> (e.g. data.path=sentiment)")
        data = ctx.load_data([run.data.text_column, run.data.label_column])
        model, self.tokenizer = ctx.load_model("causal-lm")
        self.model = ctx.apply_plugins(model)
        self.train_rows = self._rows(data["train"])
        self.eval_prompts = [self.cfg.template.format(text=t) for t in data["eval"][run.data.text_column]]
        self.eval_labels = torch.tensor(self._labels(data["eval"]))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.loop = TrainLoop(ctx, self.model, self.train_rows, collate(pad))
        self.trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.model.parameters())
        ctx.print(f"{self.plugin}: {run.model}, label words {self.cfg.label_words}; trainable parameters "
                  f"{self.trainable:,} of {total:,} ({100 * self.trainable / total:.4f}%); "
                  f"{len(self.train_rows)} train / {len(self.eval_prompts)} eval examples")

    def _labels(self, ds: Any) -> list[int]:
        labels = [int(v) for v in ds[self.ctx.run.data.label_column]]
        bad = [v for v in labels if not 0 <= v < len(self.cfg.label_words)]
        if bad:
            raise HfxError(f"label {bad[0]} has no label word; {self.plugin}.label_words has {len(self.cfg.label_words)}")
        return labels

    def _rows(self, ds: Any) -> list[dict[str, list[int]]]:
        prompts = [self.cfg.template.format(text=t) for t in ds[self.ctx.run.data.text_column]]
        words = [self.cfg.label_words[i] for i in self._labels(ds)]
        return encode_rows(self.tokenizer, prompts, words, self.ctx.run.data.max_length)

    def evaluate(self) -> dict[str, float]:
        model = self.ctx.accelerator.unwrap_model(self.loop.model)
        was_training = model.training
        model.eval()
        started = time.perf_counter()
        scores = label_word_scores(model, self.tokenizer, self.eval_prompts, self.cfg.label_words,
                                   self.ctx.run.train.eval_batch_size, self.ctx.run.data.max_length)  # (N, C)
        seconds = time.perf_counter() - started
        model.train(was_training)
        gold = scores.gather(1, self.eval_labels[:, None])[:, 0]
        return {"accuracy": float((scores.argmax(-1) == self.eval_labels).float().mean()),
                "label_nll": float(-gold.mean()), "ms_per_example": 1000 * seconds / max(len(self.eval_prompts), 1)}

    def train(self) -> dict[str, float]:
        started = time.perf_counter()
        out = self.loop.run()
        return {**out, "train_seconds": round(time.perf_counter() - started, 1), "trainable_params": self.trainable}

    def save(self, out_dir: Path) -> list[Path]:
        model = self.ctx.accelerator.unwrap_model(self.loop.model)
        with atomic_dir(out_dir / "adapter") as tmp:  # peft's format, with the tokenizer beside it
            registry.get(self.plugin).save(model, tmp)  # type: ignore[misc]
            self.tokenizer.save_pretrained(tmp)
        return [out_dir / "adapter"]


