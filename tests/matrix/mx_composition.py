"""The composition matrix: every ordered pair of plugins that ``hfx.apply`` accepts, on one tiny Llama.

:func:`run_pair` applies the two plugins in order and takes the result through forward, ``generate()``, the
plugins' off switches (LoRA's nested ``disable_adapters``), ``hfx.save`` / ``hfx.load`` and the reference
library's loader. It returns ``Outcome("pass")`` or the first clean refusal (a one-line ``HfxError`` naming
both plugins); anything else (a crash, a wrong value, a refusal that names neither plugin) is an
``AssertionError``, so the test of the cell fails.

Where the expected values come from: the plugin applied alone with the same seed (a value head and a task head
on a causal LM leave its logits unchanged; a model with one plugin switched off must equal the model with only
the other one), a head recomputed by hand (:func:`mx_probes.hand_output`), ppo's value head reading one hidden
state per real token (virtual tokens dropped), greedy search by its definition
(:func:`mx_probes.greedy_by_argmax`), and the reference libraries' own loaders (peft, sentence-transformers,
transformers) on the folder ``hfx.save`` wrote.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from mx_probes import EQUAL, any_close, greedy_by_argmax, hand_output, output, refusal, switch
from torch import nn

import hfx
from hfx import registry
from hfx.errors import HfxError
from hfx.testing import tiny_model

__all__ = ["CONFIGS", "PLUGINS", "Outcome", "build", "run_pair"]

PLUGINS: tuple[str, ...] = tuple(p.name for p in registry.iter_plugins() if p.apply is not None)
"""The plugins with a drop-in apply, from the registry (a new plugin joins the matrix; CONFIGS must name it)."""

CONFIGS: dict[str, dict[str, Any]] = {  # small settings; LoRA starts random so that switching it off shows
    "embed": {}, "finetune": {}, "lora": {"r": 4, "init_lora_weights": False},
    "ppo": {}, "prefix_tuning": {"num_virtual_tokens": 4}, "prompt_tuning": {"num_virtual_tokens": 4},
    "qat": {"bits": 8}, "quant": {"bits": 8}, "reward": {},
}
TRANSPARENT = ("finetune", "ppo")  # on a causal LM: finetune keeps the LM head, ppo adds a zero value head
SWITCHED = ("lora", "prompt_tuning", "prefix_tuning")  # plugins with an off switch (probes.disabled)
TEXTS = ["the value of a list is", "a class"]


@dataclass(frozen=True)
class Outcome:
    """A cell's result: ``pass``, or ``refused`` at ``stage`` with the refusal's one-line ``message``."""

    status: str
    stage: str = ""
    message: str = ""

    def __str__(self) -> str:
        if self.status in ("pass", "n/a"):
            return self.status  # an n/a cell's reason is in the README grid's caption
        return f"refused at {self.stage}: {short(self.message)}"


def short(message: str, limit: int = 180) -> str:
    """A refusal as the README shows it: temporary folders replaced by ``<saved>``, cut at ``limit`` characters."""
    message = re.sub(r"\S*/saved", "<saved>", message).replace("|", "/")  # a table cell has no bars
    return message if len(message) <= limit else message[: limit - 3] + "..."


def host() -> tuple[nn.Module, Any]:
    """The tiny Llama causal LM (seed 0, no dropout) every pair is applied to, and its tokenizer."""
    model, tok = tiny_model("llama", "causal-lm", 0, dropout=0.0)
    return model.eval(), tok


def build(names: list[str] | tuple[str, ...]) -> nn.Module:
    """The host with ``names`` applied in order; each plugin's random init from its own fixed seed, so a plugin
    gets the same weights whatever was applied before it."""
    model, tok = host()
    for name in names:
        torch.manual_seed(1000 + PLUGINS.index(name))
        model = hfx.apply(model, name, **CONFIGS[name])
        if hasattr(model, "encode") and getattr(model, "tokenizer", "") is None:
            model.tokenizer = tok  # the tiny model has no folder to read a tokenizer from
    return model.eval()


_ALONE: dict[tuple[tuple[str, ...], int], torch.Tensor] = {}


def alone(names: tuple[str, ...], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The output of the host with only ``names`` applied (the host itself for none), built once per batch."""
    key = (names, hash(tuple(batch["input_ids"].flatten().tolist())))
    if key not in _ALONE:
        _ALONE[key] = output(build(names), batch)
    return _ALONE[key]


def _batch(tok: Any, side: str = "right", texts: list[str] = TEXTS) -> dict[str, torch.Tensor]:
    tok.padding_side = side
    enc = tok(texts, return_tensors="pt", padding=True)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def _is_lm(model: nn.Module) -> bool:
    return hasattr(model, "generate") and hasattr(model, "get_output_embeddings") \
        and model.get_output_embeddings() is not None


def _check_forward(pair: tuple[str, str], model: nn.Module, batch: dict[str, torch.Tensor]) -> None:
    a, b = pair[0], pair[-1]
    got = output(model, batch)
    assert got.isfinite().all(), f"{a}+{b}: non-finite output"
    hand = hand_output(model, batch)
    if hand is not None:  # a score head or an embedder: its pooling recomputed by hand
        assert any_close(got, hand) <= EQUAL, f"{a}+{b}: head output {any_close(got, hand):.3g} off the hand computation"
    for see_through in dict.fromkeys(pair):
        rest = tuple(p for p in pair if p != see_through)
        if see_through in TRANSPARENT and (_is_lm(model) or not set(rest) <= set(TRANSPARENT)):
            want = alone(rest, batch)
            assert any_close(got, want) <= EQUAL, (
                f"{a}+{b}: {see_through} changed the output of {'+'.join(rest) or 'the base'} by "
                f"{any_close(got, want):.3g}")
    if "ppo" in pair and _is_lm(model):  # the value head reads one hidden state per real position, as PPO scores
        from hfx_plugins.ppo import value_head

        with torch.no_grad():
            hidden = model(**batch, output_hidden_states=True).hidden_states[-1]  # (B, T, H)
        values = value_head(model)(hidden)  # (B, T)
        assert values.shape == batch["input_ids"].shape, (
            f"{a}+{b}: values {tuple(values.shape)} for ids {tuple(batch['input_ids'].shape)}")
    head = b if b in ("reward", "embed") else a if a in ("reward", "embed") else None
    for x in (p for p in pair if p in SWITCHED and head is not None):
        plain = alone((head,), batch)  # the head on the plain model: the prompt / adapter must show in the output
        assert any_close(got, plain) > 1e-4, f"{a}+{b}: {head} ignores {x} (output equals {head} alone)"


def _check_switches(pair: tuple[str, str], model: nn.Module, batch: dict[str, torch.Tensor]) -> None:
    """Each plugin switched off equals the other alone; LoRA's blocks nest and restore what they found."""
    a, b = pair[0], pair[-1]
    before = output(model, batch)
    for x in (p for p in pair if p in SWITCHED):
        rest = tuple(p for p in pair if p != x)
        want = alone(rest, batch)
        block = switch(model, x)
        if block is None:
            continue  # the object the user holds no longer carries the prompt's switch (a head wrapped the LM)
        try:
            with block:
                off = output(model, batch)
                if x == "lora":
                    with switch(model, x):  # type: ignore[union-attr]
                        inner = output(model, batch)
                    assert any_close(inner, want) <= EQUAL, f"{a}+{b}: nested lora block is not the base"
                    off_after = output(model, batch)
                    assert any_close(off_after, want) <= EQUAL, (
                        f"{a}+{b}: the inner disable_adapters exit turned the adapter back on")
        except HfxError as err:  # LoRA's context is public: it must reach the adapter on the model the user holds
            raise AssertionError(f"{a}+{b}: lora's disable_adapters on the {type(model).__name__}: {err}") from err
        assert any_close(off, want) <= EQUAL, (
            f"{a}+{b}: {x} switched off is {any_close(off, want):.3g} off {'+'.join(rest) or 'the base'} alone")
        after = output(model, batch)
        assert any_close(after, before) <= EQUAL, f"{a}+{b}: leaving the {x} block did not restore the model"


def _check_generate(pair: tuple[str, str], model: nn.Module, tok: Any) -> None:
    a, b = pair[0], pair[-1]
    eos = tok.eos_token_id
    kw = {"do_sample": False, "pad_token_id": tok.pad_token_id, "eos_token_id": eos}
    one = _batch(tok, "left", TEXTS[:1])
    t = one["input_ids"].shape[1]
    with torch.no_grad():
        got = model.generate(**one, max_new_tokens=4, **kw)  # (1, T + <=4)
    ref = greedy_by_argmax(model, one["input_ids"], got.shape[1] - t)
    assert torch.equal(got, ref), f"{a}+{b}: generate() {got[0, t:].tolist()} != argmax steps {ref[0, t:].tolist()}"
    assert got.shape[1] == t + 4 or got[0, -1] == eos, f"{a}+{b}: generate() stopped early without EOS"
    both = _batch(tok, "left")
    with torch.no_grad():
        batched = model.generate(**both, max_new_tokens=4, **kw)[:, both["input_ids"].shape[1]:]  # (2, <=4)
        for i, text in enumerate(TEXTS):
            single = _batch(tok, "left", [text])
            alone = model.generate(**single, max_new_tokens=4, **kw)[0, single["input_ids"].shape[1]:]
            row = batched[i, : alone.shape[0]]
            assert torch.equal(row, alone), f"{a}+{b}: left-padded row {i} {row.tolist()} != alone {alone.tolist()}"
        first = model.generate(**one, max_new_tokens=2, return_dict_in_generate=True, **kw)
        seq = first.sequences  # (1, T + 2)
        cont = model.generate(input_ids=seq, attention_mask=torch.ones_like(seq),
                              max_new_tokens=2, **{cache_name(model): first.past_key_values}, **kw)
        fresh = model.generate(**one, max_new_tokens=4, **kw)
    n = min(cont.shape[1], fresh.shape[1])
    assert torch.equal(cont[:, :n], fresh[:, :n]), (
        f"{a}+{b}: continued from the returned cache {cont[0, t:].tolist()} != fresh {fresh[0, t:].tolist()}")


def cache_name(model: nn.Module) -> str:
    """The keyword ``generate()`` takes a cache under: ``cache`` from transformers 5.24, else ``past_key_values``."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _reference_load(x: str, folder: Path, host_model: nn.Module) -> Any:
    """``folder`` (what hfx.save wrote for plugin ``x``) loaded by the reference library, or None (no reference)."""
    import json

    if x in SWITCHED:
        from peft import PeftModel

        task = json.loads((folder / "adapter_config.json").read_text()).get("task_type")
        base = host_model
        if task == "SEQ_CLS":  # the reward / classifier layout: the host's trunk under a one-output head
            from transformers import AutoModelForSequenceClassification

            base = AutoModelForSequenceClassification.from_config(host_model.config, num_labels=1)
            base.model.load_state_dict(host_model.model.state_dict())
        return PeftModel.from_pretrained(base, str(folder)).eval()
    if x == "embed":
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(folder), device="cpu")
    if x == "finetune":
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(folder).eval()
    if x == "reward":
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(folder).eval()
    return None


def _check_save_load(pair: tuple[str, str], model: nn.Module, batch: dict[str, torch.Tensor]) -> Outcome | None:
    a, b = pair[0], pair[-1]
    want = output(model, batch)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "saved"
        try:
            hfx.save(model, path)
        except Exception as err:  # noqa: BLE001 - see _check_switches
            return Outcome("refused", "hfx.save", refusal(err, *pair))
        try:
            loaded = hfx.load(host()[0], path)
        except Exception as err:  # noqa: BLE001 - hfx must load what it saved
            raise AssertionError(f"{a}+{b}: hfx.load refuses what hfx.save wrote: {type(err).__name__}: {err}") from err
        got = output(loaded.eval(), batch)
        assert any_close(got, want) <= EQUAL, f"{a}+{b}: hfx.save/hfx.load changed the output by {any_close(got, want):.3g}"
        several = (path / hfx.api.MANIFEST).is_file()
        for x in pair:
            folder = path / x if several else path
            if not folder.is_dir():
                continue  # x writes nothing of its own
            try:
                ref = _reference_load(x, folder, host()[0])
            except Exception as err:  # noqa: BLE001 - the reference library must load hfx's files
                raise AssertionError(f"{a}+{b}: the reference loader of {x} fails on hfx's files: "
                                     f"{type(err).__name__}: {str(err)[:300]}") from err
            other = b if x == a else a
            if ref is None or (len(pair) == 2 and other not in TRANSPARENT):
                continue  # the reference library computes one plugin: comparable only when the other is invisible
            if x == "embed":
                theirs = torch.as_tensor(ref.encode(TEXTS))
                ours = torch.as_tensor(model.encode(TEXTS))
            else:
                with torch.no_grad():
                    theirs = ref(**batch).logits.float()
                ours = want
            assert any_close(theirs, ours) <= EQUAL, (
                f"{a}+{b}: {x}'s reference loader computes {any_close(theirs, ours):.3g} off hfx")
    return None


def run_pair(a: str, b: str) -> Outcome:
    """Apply ``a`` then ``b`` to the tiny Llama and run every stage; see the module docstring. ``a == b``: the
    plugin alone (the diagonal of the matrix)."""
    pair = (a,) if a == b else (a, b)
    try:
        model = build(pair)
    except Exception as err:  # noqa: BLE001 - a refusal is a result; refusal() fails on anything else
        return Outcome("refused", "hfx.apply", refusal(err, *pair))
    tok = host()[1]
    batch = _batch(tok)
    _check_forward(pair, model, batch)
    if _is_lm(model):
        try:
            _check_generate(pair, model, tok)
        except AssertionError:
            raise
        except Exception as err:  # noqa: BLE001
            return Outcome("refused", "generate", refusal(err, *pair))
    _check_switches(pair, model, batch)
    found = _check_save_load(pair, model, batch)
    return found or Outcome("pass")
