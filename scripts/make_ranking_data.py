"""Write hfx's bundled ``rankings`` data set: smollm2-135m's own answers ranked by VADER sentiment.

    pip install vaderSentiment                           # a dependency of hfx (the gold judge)
    nice python scripts/make_ranking_data.py             # ~13 min on one idle core
    # writes hfx/data/bundled/rankings/{train,test}.jsonl

Prompts that invite an opinion or a short review are written from 8 templates x 44 subjects (352 prompts).
Each prompt is put into smollm2-135m's chat template (its default system message included) and the model
answers it K = 4 times by sampling (temperature 0.8, no top-k/top-p cut, 8 to 32 new tokens, batches of 16
prompts, ``torch.manual_seed(seed + batch index)``). Each answer is scored by VADER's compound sentiment
(Hutto & Gilbert, ICWSM 2014: a lexicon of ~7,500 words each rated by ten people, plus rules for negation,
intensifiers and punctuation; compound in [-1, 1]) and the four answers of a prompt are ranked by it, most
positive first. The compound scores are kept (``gold``): a reward model learns from ``ranking`` alone and
is judged against ``gold``.

Row: {"prompt", "completions" (4 texts), "ranking" (0 = best; "min" ranking: equal scores share the better
rank), "ties" (true when two answers share a rank), "gold" (4 compound scores), "finished" (4 bools: the
answer ended with EOS), "question", "subject", "template"}. ``prompt + completion`` is the exact text the
model wrote. The split is by prompt (sha1 of the question, 1 in 5 to test). Generation is deterministic on
one machine and torch version; other CPUs can change the sampled tokens.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
K, TEMPERATURE, MIN_NEW, MAX_NEW, BATCH_PROMPTS = 4, 0.8, 8, 32, 16
TEMPLATES = [
    "Write a short review of {s}.",
    "What do you think of {s}?",
    "Give your honest opinion of {s}.",
    "In two sentences, how would you rate {s}?",
    "Describe your experience with {s}.",
    "Would you recommend {s} to a friend? Why?",
    "Tell me how you feel about {s}.",
    "Write a one-line customer review of {s}.",
]
SUBJECTS = [
    "the new coffee shop downtown", "rainy Mondays", "the movie Titanic", "public transport in big cities",
    "a budget airline flight", "the local public library", "working from home", "a cheap hotel near the airport",
    "the latest smartphone update", "a long train journey", "fast food burgers", "a crowded music festival",
    "online shopping", "a visit to the dentist", "a camping trip in the rain", "the city's new park",
    "a pizza delivered an hour late", "learning to play the guitar", "the school cafeteria food", "a weekend at the beach",
    "a traffic jam on the motorway", "the new superhero movie", "a hospital waiting room", "homemade bread",
    "a job interview that went badly", "the museum of modern art", "a broken washing machine", "a surprise birthday party",
    "a noisy neighbour", "a hiking trail in the mountains", "the customer service of a phone company", "a cup of hot chocolate",
    "a delayed flight with no information", "a small bookshop in the old town", "doing taxes", "a puppy adopted from a shelter",
    "a parking ticket", "the sunrise over the sea", "a lost suitcase", "a local football match",
    "a cold shower in winter", "a vegetarian restaurant", "a long queue at the post office", "an old video game",
]


def min_ranking(scores: list[float]) -> list[int]:
    """Rank 0 = highest score; equal scores share the better rank (0, 1, 1, 3): "min" ranking."""
    return [sum(other > s for other in scores) for s in scores]


def is_test(question: str) -> bool:
    return hashlib.sha1(question.encode()).digest()[0] % 5 == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "hfx" / "data" / "bundled" / "rankings")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--limit", type=int, default=0, help="only the first N prompts (a quick look)")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    from hfx.models.zoo import resolve_model

    torch.set_num_threads(1)  # on a shared machine, idle threads of a busy process spin and waste the cores
    path = resolve_model("smollm2-135m")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"  # generation continues every prompt from its last token
    vader = SentimentIntensityAnalyzer()

    questions = [(t.format(s=s), s, t) for s in SUBJECTS for t in TEMPLATES]
    if args.limit:
        questions = questions[: args.limit]
    rows, start = [], time.time()
    for b in range(0, len(questions), BATCH_PROMPTS):
        batch = questions[b : b + BATCH_PROMPTS]
        prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
                   for q, _, _ in batch]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        torch.manual_seed(args.seed + b // BATCH_PROMPTS)
        with torch.no_grad():
            out = model.generate(**enc, do_sample=True, temperature=TEMPERATURE, top_k=0, top_p=1.0,
                                 min_new_tokens=MIN_NEW, max_new_tokens=MAX_NEW, num_return_sequences=K,
                                 pad_token_id=tok.pad_token_id)  # (len(batch) * K, T + new)
        new = out[:, enc.input_ids.shape[1]:]
        for i, (question, subject, template) in enumerate(batch):
            seqs = new[i * K : (i + 1) * K]
            texts = [tok.decode(s, skip_special_tokens=True).strip() for s in seqs]
            finished = [bool((s == tok.eos_token_id).any()) for s in seqs]
            gold = [round(vader.polarity_scores(t)["compound"], 4) for t in texts]
            ranking = min_ranking(gold)
            rows.append({"prompt": prompts[i], "completions": texts, "ranking": ranking,
                         "ties": len(set(ranking)) < K, "gold": gold, "finished": finished,
                         "question": question, "subject": subject, "template": template})
        print(f"{len(rows)}/{len(questions)} prompts, {time.time() - start:.0f} s", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        chosen = [r for r in rows if is_test(r["question"]) == (split == "test")]
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chosen)
        (args.out / f"{split}.jsonl").write_text(text, encoding="utf-8")
        print(f"{split}: {len(chosen)} prompts")


if __name__ == "__main__":
    main()
