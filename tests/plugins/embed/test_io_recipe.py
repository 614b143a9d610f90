"""hfx.save -> a sentence-transformers folder; hfx.load / hfx.embed(path) back; the recipe end to end."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import hfx
from hfx.errors import HfxError
from hfx.testing import tiny_model

TEXTS = ["the function returns a new list", "a class may define methods", "", "names are bound"]


@pytest.mark.parametrize(("family", "pooling", "normalize"), [("bert", "cls", True), ("llama", "lasttoken", False)])
def test_saved_folder_loads_in_sentence_transformers(family: str, pooling: str, normalize: bool, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    model, tok = tiny_model(family, "base", seed=1)
    emb = hfx.embed(model, pooling, normalize, tokenizer=tok)
    hfx.save(emb, tmp_path / "st")
    modules = json.loads((tmp_path / "st" / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling"] + (["Normalize"] if normalize else [])
    st = SentenceTransformer(str(tmp_path / "st"), device="cpu")
    # Expected: sentence-transformers' own encode of the saved folder (batch 1: no padding on either side).
    assert np.abs(emb.encode(TEXTS) - st.encode(TEXTS, batch_size=1)).max() <= 1e-6
    again = hfx.embed(tmp_path / "st")  # pooling, normalisation and max length come from the folder
    assert (again.pooling.mode, again.pooling.normalize) == (pooling, normalize)
    assert np.abs(again.encode(TEXTS) - emb.encode(TEXTS)).max() == 0.0
    restored = hfx.load(tiny_model(family, "base", seed=2)[0], tmp_path / "st")  # other weights, overwritten
    assert np.abs(restored.encode(TEXTS) - emb.encode(TEXTS)).max() == 0.0


def test_save_and_folder_errors(tmp_path: Path) -> None:
    emb = hfx.embed(tiny_model("bert", "base")[0])
    with pytest.raises(HfxError, match="no tokenizer"):
        hfx.save(emb, tmp_path / "x")
    assert not (tmp_path / "x").exists()  # atomic: nothing half-written
    folder = tmp_path / "dense"
    model, tok = tiny_model("bert", "base")
    hfx.save(hfx.embed(model, tokenizer=tok), folder)
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(HfxError, match=r"modules hfx does not implement \(Dense\)"):
        hfx.embed(folder)


@pytest.mark.parametrize("loss", ["triplet", "cosine", "cached_mnrl"])  # plain mnrl: test_losses
def test_recipe_runs_every_loss(loss: str, cli: Callable, tiny_bert_dir: Path, tmp_path: Path) -> None:
    res = cli("run", "plugin=embed", f"model={tiny_bert_dir}", f"embed.loss={loss}", "embed.mini_batch_size=2",
              "data.max_train_samples=16", "data.max_eval_samples=24", "train.max_steps=2", "train.batch_size=4",
              f"output_dir={tmp_path}")
    assert res.code == 0, res.err
    for metric in ("spearman", "recall@5", "triplet_accuracy", "kmeans_ari", "topic_accuracy"):
        assert metric in res.out
    summary = json.loads(next(tmp_path.glob("*/summary.json")).read_text())
    assert -1 <= summary["after"]["spearman"] <= 1 and 0 <= summary["after"]["recall@10"] <= 1
    run = next(tmp_path.glob("*/"))
    assert (run / "artifacts" / "model" / "modules.json").is_file()
    assert (run / "artifacts" / "index" / "index.faiss").is_file()
    assert "(* = the query's own next sentence)" in res.out + res.err


def test_recipe_bad_config(cli: Callable, tiny_bert_dir: Path, tmp_path: Path) -> None:
    res = cli("run", "plugin=embed", f"model={tiny_bert_dir}", "embed.loss=contrastive", f"output_dir={tmp_path}")
    assert res.code == 2 and "embed.loss='contrastive' is unknown" in res.err
    res = cli("run", "plugin=embed", f"model={tiny_bert_dir}", "embed.pooling=avg", f"output_dir={tmp_path}")
    assert res.code == 2 and "embed.pooling='avg' is unknown" in res.err
