"""``hfx run plugin=icl`` end to end on tiny random models saved to folders (structure, not accuracy).

Expected values: the rows the recipe documents (4 classification rows, 4 chain-of-thought rows); the tiny
Llama's 128-token context is shorter than two worked exemplars plus a query, so examples must be dropped
(counted in the notes), never the query. The recipe is a comparison (``compare()``, called by the runner in
``train()``'s place, ``hfx.registry.Recipe.train``): its table is the run's metrics, with nothing before/after.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hfx.registry import Recipe
from hfx.runner.run import run
from hfx.testing import save_tiny_model
from hfx_plugins.icl import IclRecipe


def test_recipe_compares_instead_of_training() -> None:
    assert callable(IclRecipe.compare)
    assert IclRecipe.train is Recipe.train  # no bent train(): the runner calls compare() in its place


@pytest.mark.slow  # tiny models, but ~60 s on the shared 2-core machine (runner, 1200-sentence kNN pool, decoding)
def test_icl_recipe_table(tmp_path: Path) -> None:
    llama = save_tiny_model(tmp_path / "llama", "llama", "causal-lm")
    bert = save_tiny_model(tmp_path / "bert", "bert", "base")
    res = run(["plugin=icl", f"model={llama}", f"output_dir={tmp_path / 'runs'}", "icl.num_fewshot=2",
               "icl.classification_limit=4", "icl.cot_limit=2", "icl.max_new_tokens=4", "icl.repeats=2",
               f"icl.embedder={bert}"])
    table = json.loads((res.run_dir / "artifacts/icl_table.json").read_text())
    rows = table["rows"]
    assert table["prompts"] == "plain text"
    assert [(r["task"], r["prompting"], r["k"], r["selection"]) for r in rows] == [
        ("sentiment_foobar", "zero-shot", 0, "-"),
        ("sentiment_foobar", "zero-shot, words negative/positive", 0, "-"),
        ("sentiment_foobar", "few-shot", 2, "random"),
        ("sentiment_foobar", "few-shot", 2, "knn"),
        ("arithmetic_cot", "zero-shot direct answer", 0, "-"),
        ("arithmetic_cot", "few-shot direct answer", 2, "first_n"),
        ("arithmetic_cot", "chain of thought, greedy", 2, "first_n"),
        ("arithmetic_cot", "chain of thought, maj@2", 2, "first_n"),
    ]
    assert [r["n"] for r in rows] == [4] * 4 + [2] * 4
    assert all(0.0 <= r["score"] <= 1.0 for r in rows)
    assert "examples dropped to fit" in rows[6]["notes"]  # 2 exemplars + query > 128 tokens
    assert "pattern misses" in rows[7]["notes"]
    assert res.before == res.after == {}  # nothing trains: no before and after
    assert res.summary["train"] == {  # compare()'s metrics, one per row, in the runner's "train" slot
        f"{r['task']} {r['prompting']} k={r['k']} {r['selection']} {r['metric']}".replace("  ", " "): r["score"]
        for r in rows}
    assert (res.run_dir / "artifacts/icl_table.md").read_text().startswith("| task | prompting |")


@pytest.mark.slow  # the same run under the tiny Llama's chat template (its template writes <s>)
def test_icl_recipe_table_under_a_chat_template(tmp_path: Path) -> None:
    llama = save_tiny_model(tmp_path / "llama", "llama", "causal-lm")
    bert = save_tiny_model(tmp_path / "bert", "bert", "base")
    res = run(["plugin=icl", f"model={llama}", f"output_dir={tmp_path / 'runs'}", "icl.num_fewshot=2",
               "icl.classification_limit=4", "icl.cot_limit=2", "icl.max_new_tokens=4", "icl.repeats=2",
               f"icl.embedder={bert}", "icl.apply_chat_template=true"])
    table = json.loads((res.run_dir / "artifacts/icl_table.json").read_text())
    assert table["prompts"] == "chat template, examples as turns"
    assert [r["n"] for r in table["rows"]] == [4] * 4 + [2] * 4
    assert all(0.0 <= r["score"] <= 1.0 for r in table["rows"])
