"""icl under a chat template: the requests lm-eval 0.4.13 builds, worked by hand (no lm-eval needed).

Expected strings and token ids follow lm-eval 0.4.13's source (``lm_eval/`` of the wheel), step by step:
``api/task.py`` ``ConfigurableTask.fewshot_context`` / ``build_qa_turn`` (examples as user and assistant
turns, or with ``fewshot_as_multiturn=False`` one user turn via ``api/utils.py`` ``multiturn_to_singleturn``;
system instruction and description joined by ``api/utils.py`` ``maybe_delimit`` into a system turn),
``HFLM.apply_chat_template`` (``add_generation_prompt=True``), ``ConfigurableTask.construct_requests``
(multiple choice under a chat template without ``gen_prefix``: continuation ``"" + choice``),
``TemplateLM._encode_pair`` with ``HFLM.tok_encode`` (no special tokens for a text that starts with the
BOS text) and ``HFLM.tok_batch_encode`` for generation (the same rule, on the batch's first string).
The tokenizer is ``chat_tokenizer``'s word-level one, so each expected id is one vocabulary lookup of a
piece written out here; its template is ``{{ bos_token }}`` + ``<|role|>content</s>`` per turn +
``<|assistant|>``.
"""

from __future__ import annotations

import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Value
from transformers import LlamaConfig, LlamaForCausalLM

from hfx.errors import HfxError
from hfx.scoring import ChoiceResult, encode_pair, encode_text
from hfx_plugins.icl import (
    IclConfig,
    chat_messages,
    chat_prompt,
    continuation_delimiter,
    fit_prompt,
    generate_answers,
    render_prompt,
)
from hfx_plugins.icl import tasks as icl_tasks
from hfx_plugins.icl.chat_model import chat_tokenizer
from hfx_plugins.icl.cot import _shared_prefix
from hfx_plugins.icl.tasks import ClassificationTask

QUERY, SHOT = "Sentence: good.\nLabel:", ("Sentence: bad.\nLabel:", "bar")
CHAT_0 = "<s><|user|>Sentence: good.\nLabel:</s><|assistant|>"
CTX_0 = ["<s>", "<|user|>", "Sentence", ":", " good", ".", "\n", "Label", ":", "</s>", "<|assistant|>"]


@pytest.fixture(scope="module")
def tok():
    return chat_tokenizer(["Sentence: good.\nLabel: foo", "Sentence: bad.\nLabel: bar", "Be brief."])


def ids(tok, pieces: list[str]) -> list[int]:
    vocab = tok.get_vocab()
    return [vocab[p] for p in pieces]


def test_zero_shot_chat_request_has_one_bos_and_no_delimiter(tok) -> None:
    prompt = render_prompt(tok, QUERY, apply_chat_template=True)
    assert prompt == CHAT_0
    assert continuation_delimiter(" ", apply_chat_template=True) == ""  # construct_requests, no gen_prefix
    assert encode_pair(tok, prompt, "foo") == (ids(tok, CTX_0), ids(tok, ["foo"]))  # one <s>, bare "foo"
    assert tok.encode(prompt)[:2] == ids(tok, ["<s>", "<s>"])  # what plain encode would have scored


def test_plain_text_request_keeps_the_delimiter_and_the_tokenizers_bos(tok) -> None:
    prompt = render_prompt(tok, QUERY)
    assert prompt == QUERY and continuation_delimiter(" ", apply_chat_template=False) == " "
    assert encode_pair(tok, prompt, " foo") == (ids(tok, ["<s>", "Sentence", ":", " good", ".", "\n", "Label", ":"]),
                                                ids(tok, [" foo"]))


def test_a_chat_template_with_gen_prefix_keeps_the_delimiter() -> None:
    assert continuation_delimiter(" ", True, gen_prefix="Answer:") == " "
    assert continuation_delimiter(" ", True, gen_prefix="Answer: ") == ""


def test_fewshot_as_multiturn_turns_and_text(tok) -> None:
    turns = chat_messages(QUERY, [SHOT], system_instruction="Be brief.")
    assert turns == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": SHOT[0]},
                     {"role": "assistant", "content": "bar"}, {"role": "user", "content": QUERY}]
    got = render_prompt(tok, QUERY, [SHOT], apply_chat_template=True, system_instruction="Be brief.")
    assert got == ("<s><|system|>Be brief.</s><|user|>Sentence: bad.\nLabel:</s><|assistant|>bar</s>"
                   "<|user|>Sentence: good.\nLabel:</s><|assistant|>")
    assert encode_text(tok, got)[:3] == ids(tok, ["<s>", "<|system|>", "Be"])


def test_fewshot_in_one_user_turn(tok) -> None:
    got = render_prompt(tok, QUERY, [SHOT], apply_chat_template=True, fewshot_as_multiturn=False)
    assert got == "<s><|user|>Sentence: bad.\nLabel: bar\n\nSentence: good.\nLabel:</s><|assistant|>"


def test_system_instruction_in_plain_text_and_with_a_description(tok) -> None:
    # lm-eval's system message renders with an empty delimiter; maybe_delimit joins instruction and description
    assert render_prompt(tok, QUERY, [SHOT], system_instruction="Be brief.") == (
        "Be brief.Sentence: bad.\nLabel: bar\n\nSentence: good.\nLabel:")
    assert render_prompt(tok, QUERY, system_instruction="Be brief.", description="Label it.\n\n") == (
        "Be brief.\n\nLabel it.\n\nSentence: good.\nLabel:")


def test_template_refusing_the_system_turn_is_retried_without_it(tok) -> None:
    strict = chat_tokenizer(["Sentence: good.\nLabel: foo"])
    strict.chat_template = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}"
                            "{% endif %}" + strict.chat_template)
    with pytest.warns(UserWarning, match="refused the system turn"):
        assert chat_prompt(strict, [{"role": "system", "content": "x"}, {"role": "user", "content": QUERY}]) == CHAT_0


def test_no_chat_template_is_refused() -> None:
    plain = chat_tokenizer(["a"])
    plain.chat_template = None
    with pytest.raises(HfxError, match="no chat template"):
        render_prompt(plain, "a", apply_chat_template=True)


def test_fit_prompt_counts_one_bos(tok) -> None:
    prompt, dropped = fit_prompt(tok, QUERY, [], max_length=len(CTX_0) + 1, reserve=1, apply_chat_template=True)
    assert prompt == CHAT_0 and dropped == 0  # 11 tokens + 1 reserved fit 12; a second BOS would not


def _tiny(tok) -> LlamaForCausalLM:
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def test_generation_under_a_chat_template_has_one_bos(tok, monkeypatch) -> None:
    model = _tiny(tok)
    seen = []
    inner = model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: seen.append(kw["input_ids"].tolist()) or inner(**kw))
    got = generate_answers(model, tok, [CHAT_0], max_new_tokens=3, until=())
    assert seen == [[ids(tok, CTX_0)]]  # tok_batch_encode: add_special_tokens=False on a BOS-prefixed prompt
    step = ids(tok, CTX_0)
    with torch.no_grad():
        for _ in range(3):  # greedy by hand from the one-BOS ids
            step.append(int(model(input_ids=torch.tensor([step])).logits[0, -1].argmax()))
    assert got == [[tok.decode(step[len(CTX_0):], skip_special_tokens=True)]]


def test_shared_prefix_generation_under_a_chat_template_has_one_bos(tok) -> None:
    model = _tiny(tok)
    prompts = [render_prompt(tok, q, [SHOT], apply_chat_template=True) for q in (QUERY, "Sentence: bad.\nLabel:")]
    plain = generate_answers(model, tok, prompts, max_new_tokens=3, until=(), batch_size=1)
    shared = generate_answers(model, tok, prompts, max_new_tokens=3, until=(), shared_prefix_delimiter="<|user|>")
    assert shared == plain
    prefix, rests = _shared_prefix(tok, prompts, "<|user|>")  # the exemplars' turns, up to the last "<|user|>"
    assert prefix[:2] == ids(tok, ["<s>", "<|user|>"])  # one <s>, as tok_encode gives the whole prompt
    assert [prefix + r for r in rests] == [tok.encode(p, add_special_tokens=False) for p in prompts]


@pytest.mark.parametrize(("chat", "delimiter"), [(True, ""), (False, " ")])
def test_evaluate_classification_scores_choices_as_lm_eval_requests(tok, monkeypatch, chat, delimiter) -> None:
    features = Features({"text": Value("string"), "label": ClassLabel(names=["foo", "bar"])})
    data = Dataset.from_dict({"text": ["good.", "bad."], "label": [1, 0]}, features=features)
    seen = {}

    def record(model, tokenizer, prompts, choices, golds, target_delimiter, *args):
        seen.update(prompts=prompts, delimiter=target_delimiter)
        return ChoiceResult(lls=[[0.0, 0.0]] * len(prompts))

    monkeypatch.setattr(icl_tasks, "score_choices", record)
    cfg = IclConfig(num_fewshot=0, apply_chat_template=chat)
    icl_tasks.evaluate_classification(_tiny(tok), tok, ClassificationTask("t", data, data, ["foo", "bar"]), cfg)
    assert seen["delimiter"] == delimiter
    assert seen["prompts"][0] == (CHAT_0 if chat else QUERY)


def test_lm_eval_rows_skip_with_a_reason_without_lm_eval(monkeypatch) -> None:
    import sys

    from hfx.validate import SkipCheck
    from hfx_plugins.icl import checks

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # importlib.util.find_spec("lm_eval") -> None
    rows = [c for c in checks.checks() if c.reference == "lm-eval"]
    assert len(rows) == 2 + len(checks.CHAT_RUNS) + 1 + 2  # plain smollm2 (2), chat runs, chat acc, generation
    for row in rows:
        with pytest.raises(SkipCheck, match="needs lm-eval 0.4.13"):
            row.run()
