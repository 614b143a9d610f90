"""The architecture matrix: each plugin with a drop-in apply on tiny random configs of each model type.

:func:`run_cell` applies one plugin to one architecture and checks a property against the plain model of the
same seed; it returns ``Outcome("pass")`` or a clean refusal (one-line ``HfxError`` naming the plugin), and
raises ``AssertionError`` on anything else. The properties and where their expected values come from:

- lora (default targets): with B = 0 the output equals the plain model's (the definition of LoRA's init); with a
  random B it differs; saved, peft's ``PeftModel.from_pretrained`` on the plain model computes the same output,
  and ``hfx.load`` too.
- quant, qat (8 bits): within ``QUANT_BOUND`` of the plain model's output (relative to its largest |value|), and no
  matmul weight left in float: no ``Linear`` but the output layer, no 3-D fused-expert parameter; quant saved and
  loaded gives the same output.
- prompt_tuning, prefix_tuning (4 virtual tokens): switched off, equal to the plain model; on, different; saved,
  peft loads it with the same output, and ``hfx.load`` too.
- finetune (a classifier head on the bare backbone), reward: a decoder's score is the head on the last real
  token's hidden state (by hand); saved, transformers' ``AutoModelForSequenceClassification`` loads it with the
  same logits.
- embed: the vectors equal pooling by hand (masked mean for encoders, last real token for decoders).
- ppo (causal LMs only: it trains a policy): the logits equal the plain model's, the value head starts at zero,
  and a save/load round trip restores a trained head.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from mx_composition import Outcome
from mx_configs import ARCHS, Arch, build
from mx_probes import EQUAL, any_close, hand_output, output, refusal, switch
from torch import nn

import hfx

__all__ = ["ARCH_PLUGINS", "QUANT_BOUND", "cells", "run_cell"]

ARCH_PLUGINS = ("lora", "quant", "qat", "prompt_tuning", "prefix_tuning", "finetune", "embed", "reward", "ppo")
QUANT_BOUND = 0.05
"""8-bit per-channel round-to-nearest: max |output - plain output| <= 0.05 x max |plain output| (the worst cell of
the matrix measured 0.0164, olmo2 with quant; a 3x margin)."""
_CONFIG: dict[str, dict[str, Any]] = {"lora": {"r": 4}, "quant": {"bits": 8}, "qat": {"bits": 8},
                                      "prompt_tuning": {"num_virtual_tokens": 4},
                                      "prefix_tuning": {"num_virtual_tokens": 4}}
_TASK = {"decoder": "causal-lm", "encoder": "base", "encoder-decoder": "seq2seq-lm"}
_HEADS = ("finetune", "embed", "reward")  # put on the bare backbone (AutoModel)


def cells() -> list[tuple[str, str]]:
    """Every (model type, plugin) cell; ppo only on decoders (``not_a_cell`` says why for the others)."""
    return [(a.name, p) for a in ARCHS for p in ARCH_PLUGINS]


def not_a_cell(arch: Arch, plugin: str) -> str | None:
    """Why ``plugin`` on ``arch`` is no cell of the matrix, or None."""
    if plugin == "ppo" and arch.family != "decoder":
        return "n/a: ppo trains a causal LM policy"
    return None


def _batch(arch: Arch) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (2, 8), generator=gen)  # real words of the tiny vocabulary (ids 5..999)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # the second row is right-padded by 2
    ids[1, 6:] = 0
    batch = {"input_ids": ids, "attention_mask": mask}
    if arch.family == "encoder-decoder":
        batch["decoder_input_ids"] = ids[:, :4].clone()
    return batch


def _plain(arch: Arch, plugin: str) -> nn.Module:
    task = "base" if plugin in _HEADS and arch.family != "encoder-decoder" else _TASK[arch.family]
    model = build(arch, task)
    if arch.model_type in ("bert", "roberta", "xlm-roberta", "electra", "albert", "distilbert", "deberta-v2",
                           "modernbert"):
        model.config.cls_token_id, model.config.sep_token_id = 2, 3
    return model


def _apply(arch: Arch, plugin: str) -> nn.Module:
    model = _plain(arch, plugin)
    torch.manual_seed(1)
    out = hfx.apply(model, plugin, **_CONFIG.get(plugin, {}))
    return out.eval()


def run_cell(name: str, plugin: str) -> Outcome:
    """Apply ``plugin`` to the tiny ``name`` model and check its property (module docstring)."""
    arch = next(a for a in ARCHS if a.name == name)
    why = not_a_cell(arch, plugin)
    if why is not None:
        return Outcome("n/a", "", why)
    batch = _batch(arch)
    try:
        model = _apply(arch, plugin)
    except Exception as err:  # noqa: BLE001 - a refusal is a result; refusal() fails on anything else
        return Outcome("refused", "hfx.apply", refusal(err))
    base = output(_plain(arch, plugin).eval(), batch)
    got = output(model, batch)
    assert got.isfinite().all(), f"{name}:{plugin}: non-finite output"
    check = _CHECKS[plugin]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            check(arch, model, batch, base, got, Path(tmp) / "saved")
        except SaveRefused as err:
            return Outcome("refused", "hfx.save", refusal(err.__cause__))  # type: ignore[arg-type]
    return Outcome("pass")


class SaveRefused(Exception):
    """hfx.save refused the model (the cause is the HfxError)."""


def _save(model: nn.Module, path: Path) -> None:
    from hfx.errors import HfxError

    try:
        hfx.save(model, path)
    except HfxError as err:
        raise SaveRefused from err


def _roundtrip(arch: Arch, plugin: str, model: nn.Module, batch: dict[str, torch.Tensor], path: Path) -> torch.Tensor:
    """``model`` saved by hfx.save and loaded by hfx.load onto a fresh plain model: the loaded model's output."""
    want = output(model, batch)
    _save(model, path)
    loaded = hfx.load(_plain(arch, plugin), path).eval()
    got = output(loaded, batch)
    assert any_close(got, want) <= EQUAL, f"{arch.name}:{plugin}: hfx.save/hfx.load moved the output by {any_close(got, want):.3g}"
    return got


def _peft_equal(arch: Arch, plugin: str, path: Path, want: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
    from peft import PeftModel

    ref = PeftModel.from_pretrained(_plain(arch, plugin), str(path)).eval()
    got = output(ref, batch)
    if plugin == "prompt_tuning" and got.shape[1] > want.shape[1]:  # peft keeps the virtual positions' logits
        got = got[:, -want.shape[1]:]
    assert any_close(got, want) <= EQUAL, f"{arch.name}:{plugin}: peft computes {any_close(got, want):.3g} off hfx"


def _lora(arch: Arch, model: nn.Module, batch: dict, base: torch.Tensor, got: torch.Tensor, path: Path) -> None:
    assert any_close(got, base) <= EQUAL, f"{arch.name}:lora: with B = 0 the output moved by {any_close(got, base):.3g}"
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(hash(n) % 2**31))
    on = output(model, batch)
    assert any_close(on, base) > 1e-4, f"{arch.name}:lora: a random B leaves the output unchanged (no layer adapted?)"
    with switch(model, "lora"):  # type: ignore[union-attr]
        assert any_close(output(model, batch), base) <= EQUAL, f"{arch.name}:lora: disabled is not the plain model"
    _roundtrip(arch, "lora", model, batch, path)
    _peft_equal(arch, "lora", path, on, batch)


def _quantized(arch: Arch, plugin: str, model: nn.Module, base: torch.Tensor, got: torch.Tensor) -> None:
    from transformers.pytorch_utils import Conv1D

    rel = any_close(got, base) / float(base.abs().max())
    assert rel <= QUANT_BOUND, f"{arch.name}:{plugin}: 8-bit output {rel:.3g} x max|plain| off (bound {QUANT_BOUND})"
    out_layer = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    left = [n for n, m in model.named_modules() if type(m) in (nn.Linear, Conv1D) and m is not out_layer
            and not n.endswith("base_layer")]
    fused = [n for n, p in model.named_parameters() if p.ndim == 3 and p.is_floating_point()]
    assert not left and not fused, f"{arch.name}:{plugin}: left in float: {(left + fused)[:4]}"


def _quant(arch: Arch, model: nn.Module, batch: dict, base: torch.Tensor, got: torch.Tensor, path: Path) -> None:
    _quantized(arch, "quant", model, base, got)
    _roundtrip(arch, "quant", model, batch, path)


def _qat(arch: Arch, model: nn.Module, batch: dict, base: torch.Tensor, got: torch.Tensor, path: Path) -> None:
    _quantized(arch, "qat", model, base, got)


def _prompt(plugin: str) -> Any:
    def check(arch: Arch, model: nn.Module, batch: dict, base: torch.Tensor, got: torch.Tensor, path: Path) -> None:
        assert got.shape == base.shape, f"{arch.name}:{plugin}: output {tuple(got.shape)} != plain {tuple(base.shape)}"
        assert any_close(got, base) > 1e-4, f"{arch.name}:{plugin}: the virtual tokens change nothing"
        with switch(model, plugin):  # type: ignore[union-attr]
            off = output(model, batch)
        assert any_close(off, base) <= EQUAL, f"{arch.name}:{plugin}: switched off, {any_close(off, base):.3g} off plain"
        _roundtrip(arch, plugin, model, batch, path)
        _peft_equal(arch, plugin, path, got, batch)
    return check


def _head(plugin: str) -> Any:
    def check(arch: Arch, model: nn.Module, batch: dict, base: torch.Tensor, got: torch.Tensor, path: Path) -> None:
        hand = hand_output(model, batch)
        if hand is not None:
            assert any_close(got, hand) <= EQUAL, f"{arch.name}:{plugin}: {any_close(got, hand):.3g} off by hand"
        if arch.family == "decoder":  # the short row left-padded scores as it does alone (absolute positions too)
            _left_padded_equals_alone(arch, plugin, model, batch)
        if plugin == "embed":
            return
        from transformers import AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

        _save(model, path)
        if arch.family == "encoder-decoder":  # finetune keeps a seq2seq LM's own head
            assert any_close(got, base) <= EQUAL, f"{arch.name}:{plugin}: the LM head's output changed"
            ref = AutoModelForSeq2SeqLM.from_pretrained(path) if arch.name != "bert2bert" else \
                type(model).from_pretrained(path)
        else:
            ref = AutoModelForSequenceClassification.from_pretrained(path)
        ref = ref.eval()
        with torch.no_grad():
            theirs = ref(**batch).logits
        assert any_close(theirs, got) <= EQUAL, (
            f"{arch.name}:{plugin}: transformers' classifier from hfx's folder is {any_close(theirs, got):.3g} off")
    return check


def _left_padded_equals_alone(arch: Arch, plugin: str, model: nn.Module, batch: dict[str, torch.Tensor]) -> None:
    ids, mask = batch["input_ids"], batch["attention_mask"]
    real = int(mask[1].sum())
    left = {"input_ids": torch.cat([ids[1:, real:], ids[1:, :real]], 1),  # (1, T): pads first
            "attention_mask": torch.cat([mask[1:, real:], mask[1:, :real]], 1)}
    alone = {"input_ids": ids[1:, :real], "attention_mask": mask[1:, :real]}  # (1, real)
    a, b = output(model, left), output(model, alone)
    assert any_close(a, b) <= EQUAL, f"{arch.name}:{plugin}: a left-padded row is {any_close(a, b):.3g} off the row alone"


def _ppo(arch: Arch, model: nn.Module, batch: dict, base: torch.Tensor, got: torch.Tensor, path: Path) -> None:
    from hfx_plugins.ppo import value_head

    assert any_close(got, base) <= EQUAL, f"{arch.name}:ppo: the value head changed the logits"
    head = value_head(model)
    assert head is not None and not head.summary.weight.any(), f"{arch.name}:ppo: the value head does not start at 0"
    with torch.no_grad():
        head.summary.weight.normal_(0, 1, generator=torch.Generator().manual_seed(0))
    _save(model, path)
    loaded = hfx.load(_plain(arch, "ppo"), path)
    assert torch.equal(value_head(loaded).summary.weight, head.summary.weight), f"{arch.name}:ppo: head not restored"


_CHECKS = {"lora": _lora, "quant": _quant, "qat": _qat, "prompt_tuning": _prompt("prompt_tuning"),
           "prefix_tuning": _prompt("prefix_tuning"), "finetune": _head("finetune"), "embed": _head("embed"),
           "reward": _head("reward"), "ppo": _ppo}
