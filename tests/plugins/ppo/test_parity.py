"""hfx's PPO update against trl 1.12.0's ``trl.experimental.ppo`` on the same fixed rollout (tox -e ppo-ref).

The expected numbers are trl's own tensors, read from its ``train`` (see hfx_plugins.ppo.checks). Skipped in
the default environment: trl removed PPO after 1.12.0 (1.13.0 has no trl.experimental.ppo).
"""

from __future__ import annotations

import pytest

from hfx_plugins.ppo.checks import TOL, TRL_VERSION, parity_diffs, trl_ppo_available

needs_trl = pytest.mark.skipif(not trl_ppo_available(), reason=f"needs trl=={TRL_VERSION} (the last release with "
                               "trl.experimental.ppo); run `tox -e ppo-ref`")


@needs_trl
@pytest.mark.parametrize(("kl_estimator", "whiten_rewards"), [("k1", False), ("k3", True)])
def test_one_update_equals_trl(kl_estimator: str, whiten_rewards: bool) -> None:
    diffs = parity_diffs(kl_estimator, whiten_rewards)
    assert diffs["weights_moved"] > 5e-4  # the update really changed the policy: the comparison is not vacuous
    for key in ("scores", "rewards", "values", "returns", "advantages", "pg_loss", "vf_loss", "weights"):
        assert diffs[key] <= TOL, (key, diffs[key])


@pytest.mark.skipif(trl_ppo_available(), reason="only meaningful without trl 1.12.0")
def test_checks_say_skipped_without_trl_112() -> None:
    from hfx.validate import run_checks

    results = run_checks(["ppo"])
    assert results and all(r.passed and r.error.startswith(f"skipped: needs trl=={TRL_VERSION}") for r in results)
