"""The share of sampling in a PPO and a GRPO update, and what ppo's own decode loop saves, side by side.

    nice -n 5 python benchmarks/rollout_speed.py               # smollm2-135m, 1 thread, 2 rounds
    python benchmarks/rollout_speed.py --model tiny --rounds 1 # hfx.testing's tiny Llama: a quick run of the script

One process, one thread. The policy is smollm2-135m with the presets' LoRA (r 16, alpha 32, q/k/v/o), ppo's
value head for PPO; the reward model is seed 0's cached default (as ``hfx run plugin=ppo`` reads it); the
trainers take the presets' settings (PPO: 16 rollouts x 24 tokens, 2 epochs x 2 mini-batches; GRPO: 4
prompts x 4 completions x 24 tokens, beta 0.03). Each round runs one update with each sampler from the same
weights, optimizer state and seed (restored between them), alternating which goes first:

- ``generate``: transformers' ``generate(do_sample=True)``, only the temperature applied (the sampler before);
- ``loop``: ``hfx_plugins.ppo.rollout._decode``, the KV-cached loop ``sample`` now uses.

Both must draw the same tokens (checked each round). Reported: seconds per update, seconds in ``sample`` and
their share. Also timed: the log-prob of the chosen tokens through a full log-softmax (what ``forward_logprobs``
does) against ``gather - logsumexp`` (trl's ``selective_log_softmax`` for float32), forward and backward on
smollm2's (8, 24, 49,152) logits. Writes ``benchmarks/results/rollout_speed.{md,json}``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from hfx.io import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


class Clock:
    """Wraps a trainer module's ``sample`` to time it and keep its last responses."""

    def __init__(self, module: Any) -> None:
        self.module, self.inner, self.seconds, self.cpu, self.responses = module, module.sample, 0.0, 0.0, None

    def __enter__(self) -> Clock:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start, cpu = time.perf_counter(), time.process_time()
            out = self.inner(*args, **kwargs)
            self.seconds += time.perf_counter() - start
            self.cpu += time.process_time() - cpu
            self.responses = out.responses
            return out

        self.module.sample = timed
        return self

    def __exit__(self, *exc: Any) -> None:
        self.module.sample = self.inner


def _setup(model_name: str) -> tuple[Any, Any, list[list[int]], Any]:
    import hfx
    from hfx_plugins.ppo import reward_model_for

    if model_name == "tiny":
        from hfx.testing import tiny_model

        base, tok = tiny_model("llama", "causal-lm")
        prompts = [tok(w)["input_ids"] for w in ("the function returns", "a class has", "import the module",
                                                 "print the list") * 4]
        return base, tok, prompts, lambda qr, am, ctx: am[:, ctx:].sum(1).float() / 10
    from hfx.data.loading import read_source
    from hfx.models.loading import load_model

    base, tok = load_model(model_name, "causal-lm")
    texts = list(dict.fromkeys(read_source("rankings")["train"]["prompt"]))[:16]
    prompts = [ids[-64:] for ids in tok(texts)["input_ids"]]
    rm = os.environ.get("HFX_RM") or str(_cached_rm())
    reward = reward_model_for(rm, tok, argparse.Namespace(print=lambda *a: None))
    _ = hfx
    return base, tok, prompts, reward


def _cached_rm() -> Path:
    from hfx_plugins.ppo.rewards import cached_reward_dir

    return cached_reward_dir("smollm2-135m", 0)


def _trainer(kind: str, base: Any, tok: Any, prompts: list[list[int]], reward: Any) -> tuple[Any, Any]:
    """A PPO or GRPO trainer with its preset's settings, and the ``step`` call of one update."""
    import copy

    import hfx

    policy = hfx.apply(copy.deepcopy(base), "lora", r=16, lora_alpha=32, target_modules=TARGETS)
    if kind == "ppo":
        from hfx_plugins.ppo import PPOConfig, PPOTrainer, left_pad

        policy = hfx.apply(policy, "ppo")
        cfg = PPOConfig(batch_size=16, num_mini_batches=2, num_ppo_epochs=2, response_length=24, temperature=0.8,
                        learning_rate=5e-4, kl_coef=0.03)
        tr = PPOTrainer(cfg, tok, policy, reward_model=reward, train_dataset=[{"input_ids": p} for p in prompts],
                        num_updates=16)
        q, m = left_pad(prompts[:16], tr.pad_token_id)
        return tr, lambda: tr.step(q, m)
    from hfx_plugins.grpo import GRPOConfig, GRPOTrainer

    cfg = GRPOConfig(num_generations=4, batch_size=16, max_completion_length=24, temperature=0.8, beta=0.03,
                     learning_rate=5e-4)
    tr = GRPOTrainer(cfg, tok, policy, reward_model=reward, train_dataset=[{"input_ids": p} for p in prompts],
                     num_updates=16)
    return tr, lambda: tr.step(prompts[:4])


def _snapshot(tr: Any) -> dict[str, Any]:
    """The trainable weights, optimizer, scheduler and random states, to run another update from the same point."""
    import copy

    return {"params": {n: p.detach().clone() for n, p in tr.model.named_parameters() if p.requires_grad},
            "opt": copy.deepcopy(tr.optimizer.state_dict()),
            "sched": tr.scheduler.state_dict(), "rng": torch.get_rng_state(),
            "gen": tr.generator.get_state() if hasattr(tr, "generator") else None}


def _restore(tr: Any, snap: dict[str, Any]) -> None:
    with torch.no_grad():
        for n, p in tr.model.named_parameters():
            if n in snap["params"]:
                p.copy_(snap["params"][n])
    tr.optimizer.load_state_dict(snap["opt"])
    tr.scheduler.load_state_dict(snap["sched"])
    torch.set_rng_state(snap["rng"])
    if snap["gen"] is not None:
        tr.generator.set_state(snap["gen"])


def time_updates(kind: str, rounds: int, base: Any, tok: Any, prompts: list[list[int]], reward: Any) -> dict:
    """``rounds`` x (one update with each sampler from the same state); per-update and sampling seconds."""
    import hfx_plugins.ppo.rollout as rollout
    import hfx_plugins.ppo.trainer as ppo_trainer

    module = ppo_trainer if kind == "ppo" else sys.modules["hfx_plugins.grpo.trainer"]
    tr, step = _trainer(kind, base, tok, prompts, reward)
    plain = rollout._plain_decoder
    rows: dict[str, list[dict[str, float]]] = {"generate": [], "loop": []}
    for r in range(rounds):
        snap = _snapshot(tr)
        order = ("generate", "loop") if r % 2 == 0 else ("loop", "generate")
        drawn = {}
        for sampler in order:
            _restore(tr, snap)
            rollout._plain_decoder = (lambda m: False) if sampler == "generate" else plain
            try:
                with Clock(module) as clock:
                    start, cpu = time.perf_counter(), time.process_time()
                    step()
                    total, total_cpu = time.perf_counter() - start, time.process_time() - cpu
            finally:
                rollout._plain_decoder = plain
            drawn[sampler] = clock.responses
            rows[sampler].append({"update_s": total, "sample_s": clock.seconds, "update_cpu_s": total_cpu,
                                  "sample_cpu_s": clock.cpu, "load": os.getloadavg()[0]})
            print(f"{kind} round {r + 1} {sampler}: update {total:.1f} s ({total_cpu:.1f} CPU-s), sampling "
                  f"{clock.seconds:.1f} s ({clock.cpu:.1f} CPU-s)", flush=True)
        if not torch.equal(drawn["generate"], drawn["loop"]):
            raise SystemExit(f"{kind}: the two samplers drew different tokens in round {r + 1}")
    return rows


def time_logprobs(reps: int) -> dict[str, list[float]]:
    """Forward + backward of the chosen tokens' log-probs from (8, 24, 49152) logits: log_softmax vs logsumexp."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 24, 49152, generator=gen)
    idx = torch.randint(0, 49152, (8, 24), generator=gen)
    ways = {"log_softmax + gather": lambda x: torch.gather(torch.log_softmax(x, -1), 2, idx[..., None]).squeeze(-1),
            "gather - logsumexp": lambda x: torch.gather(x, 2, idx[..., None]).squeeze(-1) - torch.logsumexp(x, -1)}
    out: dict[str, list[float]] = {k: [] for k in ways}
    for r in range(reps):
        for name in (list(ways) if r % 2 == 0 else list(ways)[::-1]):
            x = logits.clone().requires_grad_(True)
            start = time.process_time()
            ways[name](x / 0.8).sum().backward()
            out[name].append(time.process_time() - start)
    return out


def render(report: dict[str, Any]) -> str:
    """The markdown of ``rollout_speed.md``."""
    lines = ["# Sampling in a PPO and a GRPO update: transformers' generate vs ppo's decode loop", "",
             f"`{report['command']}` ({report['model']}, 1 thread, {report['rounds']} rounds; 1-min load average "
             f"at start / end {report['load'][0]:.1f} / {report['load'][1]:.1f} on {os.cpu_count()} cores, "
             "shared with other jobs). Each round: one update with each sampler from the same weights, optimizer "
             "state and seed; the two drew the same tokens in every round.", "",
             "CPU seconds (``time.process_time``, the process's own, 1 thread) are the steadier measure on a shared "
             "machine; wall seconds are given beside them.", "",
             "| update | sampler | CPU-s / update | CPU-s sampling | sampling share (CPU) | wall s / update | "
             "wall s sampling | rounds (sampling CPU-s) |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for kind in ("ppo", "grpo"):
        for sampler in ("generate", "loop"):
            rows = report[kind][sampler]
            med = {k: statistics.median(r[k] for r in rows) for k in ("update_s", "sample_s", "update_cpu_s",
                                                                      "sample_cpu_s")}
            lines.append(f"| {kind} | {sampler} | {med['update_cpu_s']:.1f} | {med['sample_cpu_s']:.1f} | "
                         f"{med['sample_cpu_s'] / med['update_cpu_s']:.2f} | {med['update_s']:.1f} | "
                         f"{med['sample_s']:.1f} | {', '.join(format(r['sample_cpu_s'], '.1f') for r in rows)} |")
        g = [r["sample_cpu_s"] for r in report[kind]["generate"]]
        lo = [r["sample_cpu_s"] for r in report[kind]["loop"]]
        lines.append(f"| {kind} | loop / generate, sampling CPU-s, per round | | "
                     f"{', '.join(f'{b / a:.2f}' for a, b in zip(g, lo, strict=True))} | | | | |")
    lp = report["logprobs"]
    lines += ["", "Chosen-token log-probs, forward + backward on (8, 24, 49,152) logits, CPU-s (median of "
              f"{len(next(iter(lp.values())))}):", ""]
    lines += [f"- {k}: {statistics.median(v):.3f} CPU-s ({', '.join(f'{x:.2f}' for x in v)})" for k, v in lp.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Time both trainers' updates with both samplers, and the two log-prob forms; write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="rollout_speed", help="results file stem under benchmarks/results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import hfx_plugins.grpo.trainer  # noqa: F401  (registers the module Clock patches)

    load = [os.getloadavg()[0]]
    base, tok, prompts, reward = _setup(args.model)
    report: dict[str, Any] = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
                              "model": args.model, "rounds": args.rounds}
    for kind in ("ppo", "grpo"):
        torch.manual_seed(0)
        report[kind] = time_updates(kind, args.rounds, base, tok, prompts, reward)
    report["logprobs"] = time_logprobs(4)
    report["load"] = load + [os.getloadavg()[0]]
    atomic_write_json(RESULTS / f"{args.out}.json", report)
    atomic_write_text(RESULTS / f"{args.out}.md", render(report))
    print(render(report))


if __name__ == "__main__":
    main()
