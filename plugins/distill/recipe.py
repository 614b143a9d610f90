"""``hfx run plugin=distill``: distil the run's model (the teacher) into a shallower student, then compare them.

- ``task=base`` (preset ``default``: minilm, 6 layers -> 3): embedding regression. The student learns the
  teacher's normalised sentence embeddings (MSE) on sentences of ``pydoc_data.topics``, from a teacher cache
  written once (offline distillation). Scored by the Spearman correlation of pairwise cosine similarities
  with the teacher's on held-out sentences (agreement), and by two task scores the teacher has too: the
  Spearman correlation of cosine similarities with the scored pairs of ``pydoc_pairs``' test split (1 / 0.5 / 0
  for next sentence / same topic / other topic; those sentences never train) and a logistic-regression probe
  on the bundled ``sentiment`` set. "kept" = student score / teacher score.
- ``task=causal-lm`` (preset ``decoder``: smollm2-135m, 30 layers -> 15): token-level KD on pydoc text,
  scored by held-out perplexity.

Both train the same student without the teacher as well (``distill.baseline``: hard-label cross-entropy for
the LM, SimCSE for embeddings, which have no labels), and print teacher / distilled / no-teacher / untrained
side by side with parameters and speed.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
from pathlib import Path
from typing import Any

import datasets
import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding

from hfx.data.bundled import load_bundled
from hfx.data.collate import collator_for_task, tokenize_for_task
from hfx.data.loading import load_data
from hfx.errors import HfxError
from hfx.io import atomic_dir
from hfx.metrics import proportion
from hfx.models.limits import max_input_length
from hfx.models.loading import load_config, load_model, model_family
from hfx.models.zoo import resolve_model
from hfx.registry import Recipe
from hfx.runner.loop import TrainLoop, default_loss
from hfx_plugins.distill import metrics
from hfx_plugins.distill.cache import (
    CachedTeacherDataset,
    TeacherCache,
    TeacherCacheCollator,
    cache_teacher_outputs,
)
from hfx_plugins.distill.compare import BaselineContext, print_comparison, simcse_loss
from hfx_plugins.distill.io import save as save_student
from hfx_plugins.distill.objective import DistillationObjective
from hfx_plugins.distill.student import make_student, param_count
from hfx_plugins.distill.trainer import check_pair

__all__ = ["DistillRecipe"]


def _task(task: str, family: str) -> str:
    if task == "base" or (task == "auto" and family == "encoder"):
        return "embedding"
    if task == "causal-lm" or (task == "auto" and family == "decoder"):
        return "causal-lm"
    raise HfxError(f"hfx run plugin=distill trains task=base (sentence embeddings) or task=causal-lm, not {task} on a "
                   f"{family}; for other tasks use hfx.DistillationTrainer in your own script")


class DistillRecipe(Recipe):
    """setup -> evaluate (untrained student) -> train (distilled, then no-teacher) -> evaluate -> save."""

    def setup(self) -> None:
        """Load the teacher, make the student (:func:`make_student`, or ``distill.student``), load the data.

        Raises:
            HfxError: a task other than base / causal-lm, a student that cannot be compared with the teacher,
                a teacher layer the model lacks, or missing data columns.
        """
        ctx, run = self.ctx, self.ctx.run
        self.cfg = cfg = ctx.config("distill")
        self.task = _task(run.task, model_family(load_config(run.model, trust_remote_code=run.trust_remote_code)))
        hf_task = "base" if self.task == "embedding" else "causal-lm"
        teacher, self.tokenizer = ctx.load_model(hf_task)
        if cfg.student:
            student, student_tok = load_model(cfg.student, hf_task, trust_remote_code=run.trust_remote_code)
            # Both models read the same batches: inputs fit the shorter of the two position tables.
            run.data.max_length = max_input_length(student, student_tok, run.data.max_length, what="data.max_length")
            check_pair(student, teacher, self.task, student_tok, self.tokenizer)
        else:
            student = make_student(teacher, layers=cfg.layers or None)
            check_pair(student, teacher, self.task)
        student = ctx.apply_plugins(student)  # the run's other plugins (distill has no drop-in apply)
        device = ctx.accelerator.device
        self.teacher = teacher.eval().requires_grad_(False).to(device)
        self.student = student.to(device)
        self.baseline = copy.deepcopy(student) if cfg.baseline else None  # same initial weights, no teacher
        self.objective = DistillationObjective(self.task, cfg.alpha, cfg.temperature, cfg.divergence, cfg.beta,
                                               cfg.hidden_weight, cfg.pooling, cfg.normalize)
        self._load_data()
        self._before: dict[str, float] | None = None
        self._after: dict[str, float] | None = None
        ctx.print(f"distill: {run.model} ({param_count(teacher):,} parameters) -> student "
                  f"({param_count(student):,}); task {self.task}; {len(self.train_set)} training texts")

    def _load_data(self) -> None:
        run, tok = self.ctx.run, self.tokenizer
        if self.task == "embedding":
            if run.data.path:
                splits = load_data(run.data, seed=run.seed, required=[run.data.text_column])
                train, held_out = list(splits["train"]["text"]), list(splits["eval"]["text"])[: self.cfg.eval_sentences]
            else:  # pydoc sentences, the last ones held out, plus docstring / sentiment sentences if configured
                train, held_out = metrics.default_sentences(self.cfg.eval_sentences, self.cfg.docstring_sentences,
                                                            self.cfg.sentiment_sentences)
            # The scored pairs of pydoc_pairs' test split are the task score: their sentences never train.
            self.pairs = metrics.held_out_pairs()  # [(text, text, 0 / 0.5 / 1)]
            train = metrics.without_pair_sentences(train, self.pairs)
            if run.data.max_train_samples:
                train = train[: run.data.max_train_samples]
            self.held_out = held_out
            self.train_set = datasets.Dataset.from_dict({"text": train}).map(
                lambda b: tok(b["text"], truncation=True, max_length=run.data.max_length), batched=True,
                remove_columns=["text"])
            self.collate = DataCollatorWithPadding(tok)
            self.probe = load_bundled("sentiment")  # train/test with int labels: the downstream score
        else:
            data_cfg = run.data if run.data.path else dataclasses.replace(run.data, path="pydoc")
            splits = load_data(data_cfg, seed=run.seed, required=[run.data.text_column])
            self.train_set = tokenize_for_task(splits["train"], tok, "causal-lm", run.data.max_length)
            eval_set = tokenize_for_task(splits["eval"], tok, "causal-lm", run.data.max_length)
            self.collate = collator_for_task(tok, "causal-lm")
            self.eval_batches = list(DataLoader(eval_set, batch_size=run.train.eval_batch_size, collate_fn=self.collate))

    # ---- quality -------------------------------------------------------------------------------------
    def _quality(self, model: torch.nn.Module) -> dict[str, float]:
        if self.task == "causal-lm":
            return {"perplexity": metrics.token_perplexity(model, self.eval_batches)}
        bs, ml = self.ctx.run.train.eval_batch_size, self.ctx.run.data.max_length
        if not hasattr(self, "_teacher_held_out"):
            self._teacher_held_out = metrics.encode(self.teacher, self.tokenizer, self.held_out, self.objective, bs, ml)
        emb = metrics.encode(model, self.tokenizer, self.held_out, self.objective, bs, ml)
        tr, te = self.probe["train"], self.probe["test"]
        acc = metrics.probe_accuracy(metrics.encode(model, self.tokenizer, tr["text"], self.objective, bs, ml), tr["label"],
                                     metrics.encode(model, self.tokenizer, te["text"], self.objective, bs, ml), te["label"])
        pairs = metrics.pairs_spearman_estimate(
            lambda texts: metrics.encode(model, self.tokenizer, texts, self.objective, bs, ml), self.pairs)
        # Each score carries its n and 95% interval (Wilson; bootstrap for the two Spearman correlations).
        return {"spearman_vs_teacher": metrics.agreement_estimate(emb, self._teacher_held_out),
                "sentiment_accuracy": proportion(acc, len(te)), "pairs_spearman": pairs}

    @torch.no_grad()
    def _speed(self) -> dict[str, float]:
        """Teacher and student forward throughput on the held-out texts (sentences/s or tokens/s)."""
        models = {"teacher": self.teacher, "student": self.student}
        if self.task == "causal-lm":
            batches = [{k: b[k] for k in ("input_ids", "attention_mask")} for b in self.eval_batches]
            forwards = {n: (lambda b, m=m: m(**b)) for n, m in models.items()}
            return metrics.throughput(forwards, batches, lambda b: int(b["attention_mask"].sum()), self.cfg.speed_repeats)
        bs = self.ctx.run.train.eval_batch_size
        batches = [dict(self.tokenizer(self.held_out[i:i + bs], padding=True, truncation=True, return_tensors="pt",
                                       max_length=self.ctx.run.data.max_length)) for i in range(0, len(self.held_out), bs)]
        forwards = {n: (lambda b, m=m: self.objective.embed(m, b)) for n, m in models.items()}
        return metrics.throughput(forwards, batches, lambda b: int(b["input_ids"].shape[0]), self.cfg.speed_repeats)

    def evaluate(self) -> dict[str, float]:
        """The student's quality (perplexity, or agreement and accuracy); after training, train()'s."""
        if self._after is not None:  # train() already scored the distilled student for its table
            return self._after
        scores = self._quality(self.student)
        if self._before is None:
            self._before = scores
        return scores

    # ---- training ------------------------------------------------------------------------------------
    def _kd_loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.objective(model, batch, self.teacher)[0]

    def _baseline_loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.task == "embedding":
            return simcse_loss(self.objective.embed, model, batch)
        return default_loss(model, batch)  # hard labels: the model's own next-token cross-entropy

    def train(self) -> dict[str, Any]:
        """Distil the student (optionally from cached teacher outputs), then score teacher, student, the
        no-teacher baseline and the untrained student, time them, and write ``comparison.json``; returns the
        run's metrics.
        """
        ctx, run = self.ctx, self.ctx.run
        train_set, collate = self.train_set, self.collate
        if self.cfg.cache_teacher:
            path = ctx.run_dir.path / "teacher_cache.safetensors"
            if not path.is_file():  # a resumed run reuses its cache
                ctx.print("distill: caching the teacher's outputs (offline distillation)")
                cache_teacher_outputs(self.teacher, self.train_set, self.collate, path, self.objective,
                                      batch_size=run.train.eval_batch_size)
            cache = TeacherCache(path)
            cache.check_student(self.student, self.task)
            train_set, collate = CachedTeacherDataset(self.train_set, cache), TeacherCacheCollator(self.collate, self.task)
        out: dict[str, Any] = dict(TrainLoop(ctx, self.student, train_set, collate, loss_fn=self._kd_loss,
                                             evaluate=self.evaluate).run())
        self._teacher_scores = self._quality(self.teacher)
        rows = [self._row("teacher", self.teacher, self._teacher_scores)]
        self._after = self._quality(self.student)
        rows.append(self._row("student (distilled)", self.student, self._after))
        if self.baseline is not None:
            base_ctx = BaselineContext(ctx, learning_rate=self.cfg.baseline_learning_rate)
            base = TrainLoop(base_ctx, self.baseline, self.train_set, self.collate, loss_fn=self._baseline_loss).run()
            scores = self._quality(self.baseline)
            rows.append(self._row("student (no teacher)", self.baseline, scores))
            out.update({"no_teacher_train_loss": base["train_loss"], **{f"no_teacher_{k}": v for k, v in scores.items()}})
        rows.append(self._row("student (untrained)", self.student, self._before or {}))
        speed = self._speed()
        unit = "tokens/s" if self.task == "causal-lm" else "sentences/s"
        for row in rows:
            row[unit] = speed["teacher"] if row["model"] == "teacher" else speed["student"]
            row["speed-up"] = row[unit] / speed["teacher"]
        out.update({f"teacher_{k}": v for k, v in self._teacher_scores.items()})
        rate = "tokens_per_s" if self.task == "causal-lm" else "sentences_per_s"
        out.update({f"teacher_{rate}": speed["teacher"], f"student_{rate}": speed["student"],
                    "speedup": speed["student"] / speed["teacher"]})
        ctx.run_dir.write_json("comparison.json", rows)
        print_comparison(f"distill: {run.model} teacher vs student ({self.task})", rows)
        return out

    def _row(self, name: str, model: torch.nn.Module, scores: dict[str, float]) -> dict[str, Any]:
        """One table row; "kept" compares with the teacher's score (perplexity: teacher's / student's)."""
        row: dict[str, Any] = {"model": name, "layers": len(_first_stack(model)), "parameters": param_count(model)}
        ref = self._teacher_scores
        if self.task == "causal-lm":
            ppl = scores.get("perplexity")
            row["perplexity"] = ppl
            row["kept"] = ref["perplexity"] / ppl if ppl else None
        else:
            acc, pairs = scores.get("sentiment_accuracy"), scores.get("pairs_spearman")
            agree = 1.0 if model is self.teacher else scores.get("spearman_vs_teacher")
            row["spearman vs teacher"], row["agreement 95% CI"] = agree, _ci(agree)
            row["sentiment accuracy"], row["accuracy 95% CI"] = acc, _ci(acc)
            row["accuracy kept"] = acc / ref["sentiment_accuracy"] if acc is not None else None
            row["pairs spearman"], row["pairs 95% CI"] = pairs, _ci(pairs)
            row["pairs kept"] = pairs / ref["pairs_spearman"] if pairs is not None else None
        return row

    def save(self, out_dir: Path) -> list[Path]:
        """Write ``student/``: the student, its tokenizer (embeddings: sentence-transformers' files)."""
        path = out_dir / "student"
        with atomic_dir(path) as tmp:
            save_student(self.ctx.accelerator.unwrap_model(self.student), tmp, self.cfg)
            self.tokenizer.save_pretrained(tmp)
            if self.task == "embedding" and not self.cfg.student:
                _copy_sentence_transformers_files(Path(resolve_model(self.ctx.run.model)), tmp)
        return [path]


def _ci(value: Any) -> list[float] | None:
    """The 95% interval an :class:`hfx.metrics.Estimate` carries, rounded for the table; None without one."""
    ci = getattr(value, "ci95", None)
    return [round(ci[0], 4), round(ci[1], 4)] if ci is not None and ci[0] == ci[0] else None


def _first_stack(model: torch.nn.Module) -> torch.nn.ModuleList:
    from hfx_plugins.distill.student import layer_stacks

    return layer_stacks(model)[0][1]


def _copy_sentence_transformers_files(teacher_dir: Path, out: Path) -> None:
    """Copy the teacher's sentence-transformers modules (pooling, normalize) so the student loads as one too."""
    if not (teacher_dir / "modules.json").is_file():
        return
    for name in ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json"):
        if (teacher_dir / name).is_file():
            shutil.copy2(teacher_dir / name, out / name)
    for sub in teacher_dir.iterdir():
        if sub.is_dir() and sub.name[:1].isdigit():  # 1_Pooling, 2_Normalize
            shutil.copytree(sub, out / sub.name, dirs_exist_ok=True)
