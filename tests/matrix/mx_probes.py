"""What every matrix cell measures on a model: its output, hand computations of the heads, greedy decoding three
ways, and "this plugin off" switches.

Independent sources used by the cells:
- the output of a plugin's own head, recomputed by hand from the backbone's last hidden state (the last real
  token for a decoder's score and last-token pooling, sentence-transformers' masked mean for encoders);
- greedy decoding recomputed as step-by-step argmax of full forward passes (no cache), the definition of greedy
  search, against which ``generate()`` is checked alone, batched with left padding and continued from its cache.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from hfx.errors import HfxError

__all__ = ["EQUAL", "greedy_by_argmax", "hand_output", "inner_model", "output", "refusal", "switch"]

EQUAL = 1e-5
"""Largest |difference| accepted as "equal" in float32 (two computations of the same function in another order)."""


def inner_model(model: nn.Module) -> nn.Module:
    """The transformers model inside an embedder, a score head, or the model itself."""
    inner = getattr(model, "model", None)
    return inner if isinstance(inner, nn.Module) and hasattr(model, "pooling") else model


def output(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """What the model computes for ``batch``: embeddings (B, H), scores (B, L) or LM logits (B, T, V)."""
    with torch.no_grad():
        if hasattr(model, "pooling") and hasattr(model, "encode"):  # an embedder: (B, H)
            return model(batch["input_ids"], batch["attention_mask"])
        out = model(**batch)
        logits = out.logits if hasattr(out, "logits") else out.last_hidden_state
        return logits.float()


def _last_hidden(backbone: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The backbone's last hidden state over the real positions of ``batch``: (B, T, H), virtual tokens dropped."""
    with torch.no_grad():
        hidden = backbone(**batch).last_hidden_state  # (B, T + virtual, H) under prompt tuning
    return hidden[:, -batch["input_ids"].shape[1]:]  # (B, T, H): prompt tuning prepends its virtual tokens


def hand_output(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """A head's output recomputed by hand from its backbone's hidden states, or None for an LM.

    Score heads of decoders (transformers' ``*ForSequenceClassification``): the head on the hidden state of the
    last real token (from the attention mask). Embedders (sentence-transformers' ``Pooling``): last-token
    pooling for decoders, the masked mean for encoders, L2-normalised when the embedder normalises.
    """
    mask = batch["attention_mask"]  # (B, T)
    last = mask.shape[1] - 1 - mask.flip(1).float().argmax(1)  # (B,) index of each row's last real token
    rows = torch.arange(mask.shape[0])
    if hasattr(model, "pooling") and hasattr(model, "encode"):
        text = {k: batch[k] for k in ("input_ids", "attention_mask")}  # an embedder reads the text alone
        held = model.model  # the model as given to the embedder: its hooks (a prompt, a prefix) run too
        if held is not model.backbone and not getattr(held.config, "is_encoder_decoder", False):
            with torch.no_grad():  # the last hidden state, after the final norm, virtual positions dropped
                hidden = held(**text, output_hidden_states=True).hidden_states[-1][:, -mask.shape[1]:]
        else:
            hidden = _last_hidden(model.backbone, text)  # (B, T, H)
        mode = model.pooling.mode if hasattr(model.pooling, "mode") else "mean"
        if mode == "lasttoken":
            vec = hidden[rows, last]  # (B, H)
        elif mode == "mean":
            m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            vec = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)  # (B, H)
        else:
            return None
        if getattr(model.pooling, "normalize", False):
            vec = torch.nn.functional.normalize(vec, dim=-1)
        return vec
    if hasattr(model, "backbone") and hasattr(model, "head"):
        if getattr(model.backbone.config, "is_decoder", False) or "ForCausalLM" in str(
                getattr(model.backbone.config, "architectures", "")) or _is_decoder(model.backbone):
            with torch.no_grad():
                score = model.head(_last_hidden(model.backbone, batch)[rows, last])  # (B, L)
            return score + float(getattr(model, "shift", 0.0))
    return None


def _is_decoder(backbone: nn.Module) -> bool:
    from hfx.models.loading import model_family

    return model_family(backbone.config) == "decoder"


def switch(model: nn.Module, plugin: str) -> contextlib.AbstractContextManager[None] | None:
    """A block inside which ``plugin``'s effect is off on ``model``: LoRA's own ``disable_adapters`` (public, so it
    must work on whatever object the user holds), or the prompt's / prefix's injector flag where the model the
    user holds still carries the prompt (None when it does not)."""
    if plugin == "lora":
        from hfx_plugins.lora import disable_adapters

        return disable_adapters(model)
    if plugin == "prompt_tuning":
        from hfx_plugins.prompt_tuning.apply import ATTR
    else:
        from hfx_plugins.prefix_tuning.apply import ATTR
    holder = next((m for m in (model, inner_model(model)) if hasattr(m, ATTR)), None)
    return None if holder is None else _flag_off(getattr(holder, ATTR).injector)


@contextlib.contextmanager
def _flag_off(injector: Any) -> Iterator[None]:
    was = injector.enabled
    injector.enabled = False
    try:
        yield
    finally:
        injector.enabled = was


def greedy_by_argmax(model: nn.Module, ids: torch.Tensor, steps: int) -> torch.Tensor:
    """Greedy search by its definition: ``steps`` full forward passes (no cache), each appending the argmax of the
    last position. ids (1, T) -> (1, T + steps)."""
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits  # (1, T, V)
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids


def refusal(err: BaseException | None, *names: str) -> str:
    """The message of a clean refusal: an HfxError on one line naming every plugin in ``names``.

    Raises:
        AssertionError: another exception, a message over several lines, or one that leaves a plugin unnamed.
    """
    assert isinstance(err, HfxError), f"{type(err).__name__} instead of a one-line HfxError: {err}"
    msg = str(err)
    assert "\n" not in msg, f"refusal over several lines: {msg!r}"
    missing = [n for n in names if n.lower() not in msg.lower()]  # "RewardModel" names reward
    assert not missing, f"refusal does not name {', '.join(missing)}: {msg!r}"
    return msg


def any_close(a: Any, b: Any) -> float:
    """max |a - b| of two tensors of one shape (inf when the shapes differ)."""
    if a.shape != b.shape:
        return float("inf")
    return float((a.float() - b.float()).abs().max())
