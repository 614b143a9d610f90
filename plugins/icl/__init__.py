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

from hfx.registry import Plugin, export_names, lazy_exports
from hfx_plugins.icl.config import IclConfig, IclRunConfig

_EXPORTS = {  # module beside this file -> the public names it defines, imported on first use
    ".cot": ("extract_answer", "generate_answers", "self_consistency"),
    ".prompts": ("Template", "build_prompt", "chat_messages", "chat_prompt", "continuation_delimiter", "fit_prompt",
                 "render_prompt"),
    ".recipe": ("IclRecipe",),
    "hfx.scoring": ("ChoiceResult", "encode_pair", "encode_text", "loglikelihood", "score_choices"),  # the core scorer, re-exported
    ".selection": ("embed_texts", "select_examples"),
    ".tasks": (
        "ClassificationTask", "CotTask", "classification_prompts", "evaluate_classification", "evaluate_cot",
        "load_classification_task", "load_cot_task",
    ),
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["IclConfig", "IclRunConfig", "plugin", *export_names(_EXPORTS)]

plugin = Plugin(name="icl", package=__name__, config_cls=IclConfig, run_config_cls=IclRunConfig,
                recipe="IclRecipe", requires=("embed",),  # kNN selection embeds with hfx_plugins.embed.embed
                apply=None, save=None,  # ICL changes no weights: no apply.py, no io.py
                description="In-context learning: zero/few-shot prompts (random, first-n, balanced, kNN "
                            "examples), "
                            "lm-eval-style log-likelihood scoring, chain of thought and self-consistency")
