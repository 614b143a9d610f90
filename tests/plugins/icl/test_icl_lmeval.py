"""icl against lm-evaluation-harness itself (slow; needs lm-eval 0.4.13: `tox -e lmeval`, else skipped).

Expected values: lm-eval 0.4.13's own run of plugins/icl/lmeval/sentiment_foobar.yaml with its HF backend
(``parity.lmeval_parity``: ``simple_evaluate`` with ``apply_chat_template`` / ``fewshot_as_multiturn`` /
``system_instruction``, token ids recorded at ``HFLM._loglikelihood_tokens``): the same context and
continuation strings, the same token ids, log-likelihoods within 1e-5 (1e-4 on the 135M model, as in
``hfx validate``), the same acc / acc_norm and predictions.
"""

from __future__ import annotations

import pytest

from hfx_plugins.icl.chat_model import SYSTEM_INSTRUCTION, save_tiny_chat_model

pytestmark = pytest.mark.slow


def _assert_same(report: dict, tol: float) -> None:
    assert report["requests"] == 16
    for key in ("context_mismatches", "continuation_mismatches", "token_mismatches", "double_bos",
                "pred_disagreements"):
        assert report[key] == 0, (key, report)
    assert report["max_abs_loglik_diff"] <= tol
    assert report["acc_hfx"] == report["acc_lmeval"]
    assert report["acc_norm_hfx"] == report["acc_norm_lmeval"]


@pytest.mark.parametrize("num_fewshot", [0, 8])
def test_matches_lm_eval(num_fewshot: int) -> None:
    pytest.importorskip("lm_eval")
    from hfx_plugins.icl.parity import lmeval_parity

    _assert_same(lmeval_parity("smollm2-135m", num_fewshot=num_fewshot, limit=8), 1e-4)


@pytest.mark.parametrize(("tokenizer", "num_fewshot", "chat", "multiturn", "system"), [
    ("words", 0, True, True, False),   # zero-shot: one BOS though the template writes it, bare "foo"
    ("words", 4, True, False, False),  # few-shot in one user turn
    ("words", 4, True, True, True),    # few-shot as turns, with a system turn
    ("words", 4, False, True, True),   # the same model without the template: " foo", instruction as text
    ("smollm2", 0, True, True, False),  # ChatML: default system turn, "\n" after the assistant prefix
    ("smollm2", 4, True, True, False),
])
def test_chat_template_matches_lm_eval(tmp_path, tokenizer: str, num_fewshot: int, chat: bool, multiturn: bool,
                                       system: bool) -> None:
    pytest.importorskip("lm_eval")
    from hfx_plugins.icl.parity import lmeval_parity

    folder = save_tiny_chat_model(tmp_path, tokenizer)
    report = lmeval_parity(str(folder), num_fewshot=num_fewshot, limit=8, apply_chat_template=chat,
                           fewshot_as_multiturn=multiturn, system_instruction=SYSTEM_INSTRUCTION if system else "")
    _assert_same(report, 1e-5)
    assert report["example"]["continuation"] == ("foo" if chat else " foo")


def test_chat_template_on_smollm2_135m_matches_lm_eval() -> None:
    pytest.importorskip("lm_eval")
    from hfx_plugins.icl.parity import lmeval_parity

    _assert_same(lmeval_parity("smollm2-135m", num_fewshot=4, limit=8, apply_chat_template=True), 1e-4)


@pytest.mark.parametrize("tokenizer", ["words", "smollm2"])
def test_chat_template_generation_matches_lm_eval(tmp_path, tokenizer: str) -> None:
    pytest.importorskip("lm_eval")
    from transformers import AutoTokenizer

    from hfx_plugins.icl.parity import lmeval_generation_parity
    from hfx_plugins.icl.prompts import render_prompt
    from hfx_plugins.icl.tasks import COT_TEMPLATE, load_cot_task

    task = load_cot_task(limit=3)
    shots = [COT_TEMPLATE.render(r) for r in task.exemplars.select(range(2))]
    folder = save_tiny_chat_model(tmp_path, tokenizer)
    tok = AutoTokenizer.from_pretrained(folder)
    prompts = [render_prompt(tok, COT_TEMPLATE.render(r)[0], shots, apply_chat_template=True) for r in task.test]
    report = lmeval_generation_parity(str(folder), prompts, max_new_tokens=16, until=("Q:", "\n\n"))
    assert report["input_mismatches"] == report["double_bos"] == report["text_mismatches"] == 0, report
    assert report["example"]["text"] == report["example"]["lmeval_text"] != ""
