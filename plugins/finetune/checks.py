"""``hfx validate plugin=finetune``: hfx's heads and losses against transformers' own on tiny models.

Each check copies the weights of a transformers task model into hfx's implementation (or feeds both the
same logits) and returns the largest absolute difference of logits and losses.
"""

from __future__ import annotations

import torch

from hfx.data.collate import IGNORE_INDEX
from hfx.validate import Check
from hfx_plugins.finetune.heads import SequenceClassifier
from hfx_plugins.finetune.losses import causal_lm_loss, seq2seq_loss

__all__ = ["checks"]

TOL = 1e-6  # fp32 on the CPU: the same operations in the same order, so differences are rounding only


def _batch(tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    return dict(tokenizer(texts, padding=True, return_tensors="pt"))


_TEXTS = ["the function returns a new list", "a class may define its own methods and attributes here"]


def _classifier_vs_transformers(family: str, problem_type: str) -> float:
    from hfx.testing import tiny_model

    num_labels = 1 if problem_type == "regression" else 3
    ref, tok = tiny_model(family, "sequence-classification", seed=0, num_labels=num_labels)
    ref.config.problem_type = problem_type
    backbone, _ = tiny_model(family, "base", seed=1)
    ours = SequenceClassifier(backbone, num_labels, "encoder" if family == "bert" else "decoder", 0.0, problem_type)
    ours.load_state_dict(ref.state_dict(), strict=True)  # same keys: hfx's head uses transformers' layout
    ours.eval()
    batch = _batch(tok, _TEXTS)
    labels = {
        "regression": torch.tensor([0.3, -1.2]),
        "single_label_classification": torch.tensor([2, 0]),
        "multi_label_classification": torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]),
    }[problem_type]
    with torch.no_grad():
        a, b = ours(**batch, labels=labels), ref(**batch, labels=labels)
    return max((a.logits - b.logits).abs().max().item(), (a.loss - b.loss).abs().item())


def _causal_lm_loss() -> float:
    from hfx.testing import tiny_model

    model, tok = tiny_model("llama", "causal-lm", seed=0)
    batch = _batch(tok, _TEXTS)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
    with torch.no_grad():
        out = model(**batch, labels=labels)
    return (causal_lm_loss(out.logits, labels) - out.loss).abs().item()


def _seq2seq_loss() -> float:
    from hfx.testing import tiny_model

    model, tok = tiny_model("t5", "seq2seq-lm", seed=0)
    batch = _batch(tok, _TEXTS)
    labels = tok(["positive", "a negative answer"], padding=True, return_tensors="pt")
    target = labels["input_ids"].masked_fill(labels["attention_mask"] == 0, IGNORE_INDEX)
    with torch.no_grad():
        out = model(**batch, labels=target)
    return (seq2seq_loss(out.logits, target) - out.loss).abs().item()


def checks() -> list[Check]:
    """``hfx validate plugin=finetune``: the classifier's outputs and losses vs
    ``*ForSequenceClassification``, and the causal-LM and seq2seq losses vs transformers' own (``labels=``).
    """
    out = [
        Check(f"{fam} classifier ({problem}) vs *ForSequenceClassification", "transformers", TOL,
              lambda fam=fam, problem=problem: _classifier_vs_transformers(fam, problem))
        for fam in ("bert", "llama")
        for problem in ("single_label_classification", "regression", "multi_label_classification")
    ]
    out.append(Check("causal LM loss vs LlamaForCausalLM(labels=...)", "transformers", TOL, _causal_lm_loss))
    out.append(Check("seq2seq loss vs T5ForConditionalGeneration(labels=...)", "transformers", TOL, _seq2seq_loss))
    return out
