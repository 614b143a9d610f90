"""The architecture matrix: each plugin with a drop-in apply on tiny random configs of 34 model types (decoders
with GQA, multi-query, fused qkv, Conv1D, sliding windows, MoE, head_dim != hidden / heads; encoders with RoBERTa's
offsets and ELECTRA's projection; encoder-decoders). The property each plugin is checked for, and its source
(the plain model of the same seed, peft, transformers, a hand computation): ``mx_architectures``'s docstring.

Each cell's outcome must be the README's entry for it; a known fault is a strict xfail (``mx_faults.FAULTS``).
"""

from __future__ import annotations

import pytest
from mx_architectures import cells, run_cell
from mx_configs import ARCHS
from mx_faults import FAULTS

CELLS = [f"{n}:{p}" for n, p in cells()]


def _param(cell: str) -> object:
    marks = [pytest.mark.xfail(strict=True, reason=FAULTS[cell])] if cell in FAULTS else []
    return pytest.param(cell, id=cell, marks=marks)


def test_the_matrix_covers_the_structures_it_names() -> None:
    kinds = {a.model_type for a in ARCHS}
    assert len(kinds) >= 25
    assert {"llama", "falcon", "gpt_bigcode", "phi3", "gpt_neox", "bloom", "gpt2", "mistral", "gemma2", "mixtral",
            "qwen2_moe", "qwen3_moe", "olmoe", "gemma", "qwen3", "gemma3_text", "bert", "roberta", "electra",
            "deberta-v2", "modernbert", "t5", "bart", "encoder-decoder"} <= kinds


@pytest.mark.parametrize("cell", [_param(c) for c in CELLS])
def test_cell(cell: str, readme_cells: tuple[dict[str, str], dict[str, str]]) -> None:
    name, plugin = cell.split(":")
    got = str(run_cell(name, plugin))
    if cell in FAULTS:
        return  # reached only when the fault is gone: the strict xfail then fails, saying so
    assert got == readme_cells[1].get(cell), (
        f"{cell}: {got!r}, README says {readme_cells[1].get(cell)!r}; run python tests/matrix/mx_table.py")
