"""LoRA+ (Hayou et al. 2024, https://arxiv.org/abs/2402.12354): a larger learning rate for B than for A.

With B initialised at zero, A and B play different roles and one shared learning rate is inefficient at
large widths; the paper sets lr_B = ratio * lr_A (ratio around 16). These are optimizer parameter groups,
the same four groups as ``peft.optimizers.create_loraplus_optimizer``, so they plug into any optimizer::

    groups = loraplus_param_groups(model, lr=2e-4, loraplus_lr_ratio=16)
    optimizer = torch.optim.AdamW(groups)            # or TrainLoop(..., param_groups=groups)
"""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers.pytorch_utils import ALL_LAYERNORM_LAYERS
from transformers.trainer_pt_utils import get_parameter_names

from hfx.errors import HfxError
from hfx_plugins.lora.embedding import LoraEmbedding

__all__ = ["loraplus_param_groups"]


def loraplus_param_groups(
    model: nn.Module,
    *,
    lr: float,
    loraplus_lr_ratio: float,
    loraplus_lr_embedding: float = 1e-6,
    weight_decay: float = 0.0,
) -> list[dict[str, Any]]:
    """Split the trainable parameters into peft's LoRA+ groups.

    - ``A``: every LoRA A (and other 2-D trainable weights) at ``lr``;
    - ``embedding``: adapters of embedding layers at ``loraplus_lr_embedding``;
    - ``B``: LoRA B and every 1-D trainable tensor (DoRA magnitudes, biases) at ``lr * ratio``, with
      ``weight_decay`` unless the tensor is a bias or a LayerNorm weight (``B_no_decay``).

    Every group carries a ``name`` key, which optimizers ignore and which makes the groups easy to inspect.
    LoRA+: Hayou et al. 2024, https://arxiv.org/abs/2402.12354; the grouping is peft's ``create_loraplus_optimizer``.

    Raises:
        HfxError: ``loraplus_lr_ratio`` < 1, or the model has no trainable parameter.
    """
    if loraplus_lr_ratio < 1:
        raise HfxError(f"loraplus_lr_ratio must be >= 1 (lr of B / lr of A), got {loraplus_lr_ratio}")
    decay = {n for n in get_parameter_names(model, ALL_LAYERNORM_LAYERS) if "bias" not in n}
    groups: dict[str, list[nn.Parameter]] = {"A": [], "embedding": [], "B": [], "B_no_decay": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # adapter tensors live in a dict below their layer: <layer>.lora_embedding_A.<adapter>
        owner = model.get_submodule(".".join(name.split(".")[:-2])) if name.count(".") >= 2 else None
        if isinstance(owner, LoraEmbedding):
            groups["embedding"].append(p)
        elif "lora_B" in name or p.ndim == 1:
            groups["B" if name in decay else "B_no_decay"].append(p)
        else:
            groups["A"].append(p)
    if not any(groups.values()):
        raise HfxError("LoRA+: the model has no trainable parameters; apply the lora plugin first")
    return [
        {"name": "A", "params": groups["A"], "lr": lr, "weight_decay": weight_decay},
        {"name": "embedding", "params": groups["embedding"], "lr": loraplus_lr_embedding, "weight_decay": weight_decay},
        {"name": "B", "params": groups["B"], "lr": lr * loraplus_lr_ratio, "weight_decay": weight_decay},
        {"name": "B_no_decay", "params": groups["B_no_decay"], "lr": lr * loraplus_lr_ratio, "weight_decay": 0.0},
    ]
