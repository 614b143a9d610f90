"""``icl``: in-context learning - prompts, example selection (random, first-n, balanced, kNN) and lm-eval-style scoring.

    from hfx_plugins.icl import build_prompt, select_examples, score_choices, generate_answers, extract_answer
    idx = select_examples(pool_texts, query_texts, k=8, method="knn")          # KATE with minilm via hfx.embed
    res = score_choices(model, tok, prompts, [["foo", "bar"]] * n, golds)     # res.acc, res.acc_norm (lm-eval)
    chains = generate_answers(model, tok, prompts, do_sample=True, temperature=0.7, num_return_sequences=5)
    answer = self_consistency([extract_answer(c)[0] for c in chains[0]])

``hfx run plugin=icl`` prints one table for smollm2-135m on the bundled ``sentiment_foobar`` and
``arithmetic_cot`` tasks (see README.md). ICL changes no weights: the plugin has no ``apply``, ``save`` or
``load``. Importing this package imports no torch: the public names below load on first use.
"""

from pathlib import Path

from hfx.registry import Plugin, lazy, lazy_exports
from hfx_plugins.icl.config import IclConfig, IclRunConfig

_EXPORTS = {
    "ChoiceResult": "hfx_plugins.icl.scoring",
    "ClassificationTask": "hfx_plugins.icl.tasks",
    "CotTask": "hfx_plugins.icl.tasks",
    "IclRecipe": "hfx_plugins.icl.recipe",
    "Template": "hfx_plugins.icl.prompts",
    "build_prompt": "hfx_plugins.icl.prompts",
    "chat_prompt": "hfx_plugins.icl.prompts",
    "classification_prompts": "hfx_plugins.icl.tasks",
    "embed_texts": "hfx_plugins.icl.selection",
    "encode_pair": "hfx_plugins.icl.scoring",
    "evaluate_classification": "hfx_plugins.icl.tasks",
    "evaluate_cot": "hfx_plugins.icl.tasks",
    "extract_answer": "hfx_plugins.icl.cot",
    "fit_prompt": "hfx_plugins.icl.prompts",
    "generate_answers": "hfx_plugins.icl.cot",
    "load_classification_task": "hfx_plugins.icl.tasks",
    "load_cot_task": "hfx_plugins.icl.tasks",
    "loglikelihood": "hfx_plugins.icl.scoring",
    "score_choices": "hfx_plugins.icl.scoring",
    "select_examples": "hfx_plugins.icl.selection",
    "self_consistency": "hfx_plugins.icl.cot",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["IclConfig", "IclRunConfig", "plugin", *sorted(_EXPORTS)]

plugin = Plugin(
    name="icl",
    description="In-context learning: zero/few-shot prompts (random, first-n, balanced, kNN examples), "
    "lm-eval-style log-likelihood scoring, chain of thought and self-consistency",
    config_cls=IclConfig,
    run_config_cls=IclRunConfig,
    recipe=lazy("hfx_plugins.icl.recipe:IclRecipe"),
    checks=lazy("hfx_plugins.icl.checks:checks"),
    presets_dir=Path(__file__).parent / "configs",
)
