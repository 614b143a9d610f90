"""How prompt learning meets the plugins that read a model's hidden states or disable its adapters.

``prompt_tuning`` changes the sequence (``n`` virtual positions in front of the real tokens) and
``prefix_tuning`` the attention (``n`` keys and values in front of each layer's own); both do it in forward hooks
on the model that ``hfx.apply`` was given (the ``...ForCausalLM``), not on its trunk. A plugin that reads the
trunk directly (a score head, an embedder) or takes "the policy with its adapter disabled" as its reference (ppo,
grpo, dpo) would silently compute without the prompt, or with the trained prompt in the reference. Each such
consumer asks here first:

- :func:`prompt_plugins`: which prompt-learning plugins ``model`` carries (from the record of applied plugins);
- :func:`check_reference`: refuse, in one line naming both plugins, a policy whose trained prompt or prefix would
  stay in a reference computed as the policy with its LoRA adapter disabled (peft's ``disable_adapter`` would
  instead drop it, which is not the policy training starts from either: only a frozen prompt or an explicit
  reference model give the KL its meaning);
- :func:`refuse_trunk_reader`: refuse, naming both plugins, a consumer that would read the trunk without the hooks;
- :func:`drop_virtual`: the virtual positions taken out of a forward's ``logits`` and ``hidden_states``, so that
  every per-position output lines up with ``input_ids`` (a value head or a pooling reads real tokens only).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from hfx.errors import HfxError
from hfx.protocols import applied

__all__ = ["ENCODER_ATTRS", "check_reference", "drop_virtual", "prompt_plugins", "refuse_trunk_reader"]

ENCODER_ATTRS = {"prompt_tuning": "prompt_encoder", "prefix_tuning": "prefix_encoder"}
"""Each prompt-learning plugin's trained module, as ``hfx.apply`` stores it on the model (``model.<attr>``)."""


def prompt_plugins(model: nn.Module) -> list[str]:
    """The prompt-learning plugins applied to ``model`` (``getattr(model, "module", model)`` under DDP), in order."""
    model = getattr(model, "module", model)
    return [name for name, _ in applied(model) if name in ENCODER_ATTRS and hasattr(model, ENCODER_ATTRS[name])]


def check_reference(model: nn.Module, consumer: str) -> None:
    """Refuse a policy whose reference (the policy with its LoRA adapter disabled) would keep a trained prompt.

    A prompt or prefix that is frozen is part of the base the policy starts from, and the reference computes with
    it as the policy does: allowed. One that trains would move the reference with the policy.

    Args:
        model: The policy.
        consumer: The trainer's plugin name (ppo, grpo, dpo), for the message.

    Raises:
        HfxError: one line naming both plugins, the parameter count and the ways out.
    """
    model = getattr(model, "module", model)
    for name in prompt_plugins(model):
        trained = sum(p.numel() for p in getattr(model, ENCODER_ATTRS[name]).parameters() if p.requires_grad)
        if trained:
            has_lora = any(n == "lora" for n, _ in applied(model))
            why = ("its reference is the policy with its LoRA adapter disabled, which keeps the trained "
                   f"{name} module, so the KL would not see what {name} learns" if has_lora else
                   f"its reference would be the policy with its adapter disabled, and {name} is not a LoRA adapter")
            raise HfxError(f"{consumer} cannot train a {name} policy as its own reference ({trained:,} trained "
                           f"{name} parameters): {why}; pass ref_model=<a frozen copy of the starting policy> where "
                           f"{consumer} takes one, or freeze the {name} module and train a LoRA adapter")


def refuse_trunk_reader(model: nn.Module, consumer: str, what: str) -> None:
    """Refuse ``consumer`` on a model whose prompt-learning hooks its computation would bypass.

    Args:
        model: The model ``consumer`` was given (the one ``hfx.apply`` put the hooks on).
        consumer: The consumer's plugin name, for the message.
        what: What ``consumer`` reads instead of the hooked model (e.g. "the trunk under a new score head").

    Raises:
        HfxError: ``model`` carries prompt_tuning or prefix_tuning (one line naming both plugins).
    """
    found = prompt_plugins(model)
    if found:
        raise HfxError(f"{consumer} cannot be applied to a {found[0]} model: {consumer} reads {what}, which the "
                       f"{found[0]} hooks on {type(getattr(model, 'module', model)).__name__} do not reach, so the "
                       f"prompt would be silently dropped; apply {consumer} to the plain model")


def drop_virtual(output: Any, n: int, logits: bool) -> Any:
    """Take the ``n`` leading virtual positions out of a model output, in place; return it.

    ``hidden_states`` (each ``(B, n + T, H)`` -> ``(B, T, H)``) always; ``logits`` (``(B, n + T, V)`` -> ``(B, T, V)``)
    when ``logits`` is true (false when the model kept only its last positions, which are real tokens).
    ``attentions`` keep them: each row's weights on the virtual tokens are part of its distribution.
    """
    if not hasattr(output, "keys"):
        return output
    keys = output.keys()
    if logits and "logits" in keys:
        output["logits"] = output["logits"][:, n:]  # (B, T, V)
    if "hidden_states" in keys and output["hidden_states"] is not None:
        output["hidden_states"] = tuple(h[:, n:] for h in output["hidden_states"])  # each (B, T, H)
    return output
