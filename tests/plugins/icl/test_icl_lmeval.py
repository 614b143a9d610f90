"""icl against lm-evaluation-harness on the real model (slow; needs lm-eval: `tox -e lmeval`).

Expected values: lm-eval 0.4.13's own run of plugins/icl/lmeval/sentiment_foobar.yaml with its HF backend
on the smollm2-135m cache folder: the same prompt strings, log-likelihoods within 1e-4, the same acc/acc_norm.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("num_fewshot", [0, 8])
def test_matches_lm_eval(num_fewshot: int) -> None:
    pytest.importorskip("lm_eval")
    from hfx_plugins.icl.parity import lmeval_parity

    report = lmeval_parity("smollm2-135m", num_fewshot=num_fewshot, limit=8)
    assert report["requests"] == 16
    assert report["context_mismatches"] == 0
    assert report["max_abs_loglik_diff"] <= 1e-4
    assert report["acc_hfx"] == report["acc_lmeval"]
    assert report["acc_norm_hfx"] == report["acc_norm_lmeval"]
    assert report["pred_disagreements"] == 0
