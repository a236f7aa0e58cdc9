"""Retrieval-head scoring: ours vs the paper's eager decode loop, on the same samples, in one run.

For every needle sample of a grid this times, side by side in one process:

  (a)  ours, the default: teacher-forced, every shared token prefix of the grid computed once
       (run twice, before and after the per-sample loops; the mean is reported)
       (`interp.hooks.prefix`: KV cache reused, sibling samples batched when
       --batch-size > 1), top-1 of the response rows only from `interp.kernels`;
  (a0) ours without reuse: one SDPA forward per sample on prompt + response (--no-single skips);
  (a') ours, decode mode: the paper's greedy loop on the SDPA model, top-1 of each step's row
       from the kernel (--decode runs it);
  (b)  the paper's loop, all eager: the same greedy loop on a separately loaded eager model
       with ``output_attentions=True``, j* = argmax of each materialised attention row, the
       prompt prefilled by the eager model too;
  (b') the paper's loop as its code runs it: the prompt prefilled by the fast attention
       (Wu et al. use flash attention; here SDPA, the same weights), only the decode steps
       eager with ``output_attentions=True``. At long prompts the eager prefill dominates (b),
       so (b') is the fairer baseline there.
       (The paper then loops over heads in Python with ``topk``; we take one vectorised argmax,
       which only makes (b) and (b') faster, so the ratios are conservative.)

and checks, failing (exit 1) on any difference:

  - (a) vs (a0) on every sample: identical top-1 positions and greedy tokens (reuse is exact);
  - (a) vs (b) on every sample counted by both where the model copies the needle (its greedy
    decode emits the teacher-forced response): the same rows, so identical events;
  - (a') vs (b) on every sample: same emitted tokens and events (kernel vs eager attention);
  - (b') vs (b) on every sample: same emitted tokens and events (reported, not failed: the
    two prefills differ by rounding, which may flip a near-tie).

CPU time (process time) is reported next to wall time: on a shared machine it is the steadier
of the two. ``--json PATH`` writes every number for benchmarks/RESULTS.md.

Usage:
  .venv/bin/python benchmarks/retrieval.py [--lengths 512,1024] [--depths 0.1,0.5,0.9] [--threads 1]
      [--needles soup,...] [--batch-size 1] [--no-single] [--decode] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time

import torch


def _events(trace, sample):
    from interp.analyses.retrieval import score_trace

    return score_trace(trace, sample)[0]


class _Clock:
    """Accumulates wall and process CPU seconds of the blocks it times."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    def __enter__(self):
        self._t, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.last = time.perf_counter() - self._t
        self.wall += self.last
        self.cpu += time.process_time() - self._c


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="HF id or folder (default: embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--lengths", default="512,1024", help="comma-separated prompt lengths (default: the CLI's)")
    parser.add_argument("--depths", default="0.1,0.5,0.9", help="comma-separated depths (default: the CLI's)")
    parser.add_argument("--needles", default=None, help="comma-separated needle ids to keep (default: all shipped)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="samples per batch below a shared prefix (default: RetrievalConfig's)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-single", action="store_true", help="skip (a0), one full pass per sample")
    parser.add_argument("--decode", action="store_true", help="also time (a'), our decode mode")
    parser.add_argument("--json", default=None, help="write all numbers to this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from retrieval_paper_loop import paper_decode_trace  # beside this file (run as a script)
    from transformers import AutoModelForCausalLM

    from interp.analyses.retrieval import RetrievalConfig, rouge1_recall
    from interp.experiments.retrieval import decode_trace, prepare_samples, teacher_trace, teacher_traces
    from interp.hooks.prefix import prefix_tree, tree_cost
    from interp.models import _resolve, load_model

    load_start = os.getloadavg()
    started = time.time()
    lm = load_model(args.model)
    _, source = _resolve(args.model)
    eager = AutoModelForCausalLM.from_pretrained(source, attn_implementation="eager", dtype=torch.float32).eval()
    config = RetrievalConfig(
        lengths=tuple(int(x) for x in args.lengths.split(",")),
        depths=tuple(float(x) for x in args.depths.split(",")),
        mask=False,
        **({} if args.batch_size is None else {"batch_size": args.batch_size}),
    )
    samples, _ = prepare_samples(lm, config)
    batch_size = config.batch_for(lm.device)
    if args.needles:
        keep = set(args.needles.split(","))
        samples = [s for s in samples if s.needle_id in keep]
        if not samples:
            raise SystemExit(f"no sample has a needle in {sorted(keep)}")
    tok = lm.tokenizer
    n_tokens = sum(len(s.input_ids) for s in samples)
    n_tree = tree_cost(prefix_tree([s.input_ids for s in samples]))

    # warm-up (first-call overheads of both models)
    warm = torch.tensor([list(samples[0].prompt_ids[:64])])
    with torch.no_grad():
        lm.forward(warm)
        eager(input_ids=warm)

    # (a) runs once before and once after the per-sample loops; its time is the mean of the two,
    # so that it sees the same (shared, changing) machine load as the loops on average.
    clocks = {name: _Clock() for name in ("shared", "single", "decode", "paper", "paper_fast")}
    shared_runs = []
    with clocks["shared"] as c:
        shared = teacher_traces(lm, samples, batch_size=batch_size)
    shared_runs.append({"wall": c.last, "cpu": clocks["shared"].cpu, "load": os.getloadavg()[0]})
    print(
        f"(a) shared-prefix teacher forcing, run 1: {c.last:.1f} s wall, {clocks['shared'].cpu:.1f} s CPU "
        f"for {len(samples)} samples ({n_tree} of {n_tokens} positions computed)",
        flush=True,
    )

    failures: list[str] = []
    rows = []
    copied = counted_both = fast_differ = 0
    print(
        f"{'sample':<22}{'tokens':>7}{'single s':>10}{'decode s':>10}{'paper s':>9}{'fast s':>10}{'steps':>7}  copies  events"
    )
    for s, tt in zip(samples, shared):
        ev_t = _events(tt, s)
        t_single = t_decode = float("nan")
        if not args.no_single:
            with clocks["single"] as c:
                alone = teacher_trace(lm, s)
            t_single = c.last
            if not (torch.equal(alone.top1, tt.top1) and torch.equal(alone.emitted, tt.emitted)):
                n_diff = int((alone.top1 != tt.top1).sum())
                failures.append(f"{s.key}: shared-prefix trace differs from one full pass ({n_diff} top-1 cells)")
        with clocks["paper"] as c:
            pt = paper_decode_trace(eager, tok, s, max_new_tokens=config.max_new_tokens)
        t_paper = c.last
        ev_p = _events(pt, s)
        with clocks["paper_fast"] as c:
            pf = paper_decode_trace(eager, tok, s, max_new_tokens=config.max_new_tokens, prefill_model=lm.hf_model)
        t_fast = c.last
        fast_same = torch.equal(pf.emitted, pt.emitted) and torch.equal(_events(pf, s), ev_p)
        fast_differ += not fast_same
        if args.decode:
            with clocks["decode"] as c:
                dt = decode_trace(lm, s, max_new_tokens=config.max_new_tokens)
            t_decode = c.last
            if not torch.equal(dt.emitted, pt.emitted):
                failures.append(f"{s.key}: decode (sdpa) and paper (eager) emitted different tokens")
            elif not torch.equal(_events(dt, s), ev_p):
                failures.append(f"{s.key}: decode-mode events differ from the paper's")

        recall_t = rouge1_recall(tok.decode(tt.answer_ids()), s.answer)
        recall_p = rouge1_recall(tok.decode(pt.answer_ids()), s.answer)
        both = recall_t >= config.min_recall and recall_p >= config.min_recall
        counted_both += both
        n = len(s.response_ids)
        copies = pt.answer_ids()[:n] == list(s.response_ids)
        verdict = "-"
        if both and copies:
            copied += 1
            same = torch.equal(ev_t, ev_p[..., :n]) and not ev_p[..., n:].any()
            verdict = "same" if same else "DIFFER"
            if not same:
                failures.append(f"{s.key}: teacher events differ from the paper's although the model copies the needle")
        rows.append(
            {
                "key": s.key,
                "tokens": s.n_prompt,
                "single_s": t_single,
                "decode_s": t_decode,
                "paper_s": t_paper,
                "paper_fast_prefill_s": t_fast,
                "paper_fast_prefill_same": fast_same,
                "steps": len(pt.emitted),
                "copies": copies,
                "events": verdict,
                "events_ours": int(ev_t.sum()),
                "events_paper": int(ev_p.sum()),
                "cpu_so_far": {k: clocks[k].cpu for k in clocks},
                "load": os.getloadavg()[0],
                "failures_so_far": len(failures),
            }
        )
        if args.json:  # a long run that dies keeps what it measured
            with open(args.json + ".partial", "a") as f:
                f.write(json.dumps(rows[-1]) + "\n")
        print(
            f"{s.key:<22}{s.n_prompt:>7}{t_single:>10.2f}{t_decode:>10.2f}{t_paper:>9.2f}{t_fast:>10.2f}{len(pt.emitted):>7}"
            f"  {'yes' if copies else 'no':<6}  {verdict} ({int(ev_t.sum())} ours / {int(ev_p.sum())} paper events)",
            flush=True,
        )

    cpu_before = clocks["shared"].cpu
    with clocks["shared"] as c:
        again = teacher_traces(lm, samples, batch_size=batch_size)
    shared_runs.append({"wall": c.last, "cpu": clocks["shared"].cpu - cpu_before, "load": os.getloadavg()[0]})
    if not all(torch.equal(x.top1, y.top1) and torch.equal(x.emitted, y.emitted) for x, y in zip(shared, again)):
        failures.append("the two runs of (a) gave different traces")
    clocks["shared"].wall /= 2
    clocks["shared"].cpu /= 2
    print(
        f"(a) run 2: {shared_runs[1]['wall']:.1f} s wall, {shared_runs[1]['cpu']:.1f} s CPU (the totals below use the mean of both runs)"
    )
    load_end = os.getloadavg()
    print()
    print(
        f"model {lm.name}, {len(samples)} samples, torch threads {torch.get_num_threads()}, batch size {batch_size}; "
        f"load average {load_start[0]:.1f} at start, {load_end[0]:.1f} at end"
    )
    print(f"{'':36}{'wall s':>9}{'CPU s':>9}")
    labels = {
        "shared": "(a)  ours, shared-prefix teacher",
        "single": "(a0) ours, one pass per sample",
        "decode": "(a') ours, decode mode",
        "paper": "(b)  paper's loop, all eager",
        "paper_fast": "(b') paper's loop, fast prefill",
    }
    ran = [
        k
        for k in labels
        if k not in ("single", "decode") or (k == "single" and not args.no_single) or (k == "decode" and args.decode)
    ]
    for k in ran:
        print(f"{labels[k]:<36}{clocks[k].wall:9.2f}{clocks[k].cpu:9.2f}")
    ratios = {}
    for base in ("paper", "paper_fast"):
        for k in ran:
            if k not in ("paper", "paper_fast"):
                r = ratios.setdefault(base, {})[k] = {
                    "wall": clocks[base].wall / clocks[k].wall,
                    "cpu": clocks[base].cpu / clocks[k].cpu,
                }
                print(
                    f"ratio {labels[base].split()[0]}/{labels[k].split()[0]}: {r['wall']:.2f}x wall, {r['cpu']:.2f}x CPU time"
                )
    print(f"positions computed: {n_tree} of {n_tokens} ({n_tokens / n_tree:.2f}x fewer with shared prefixes)")
    print(
        f"events: teacher vs paper identical on {copied} samples where the model copies the needle "
        f"({counted_both} counted by both); reuse vs one pass checked on {0 if args.no_single else len(samples)} samples; "
        f"(b') vs (b) differ in tokens or events on {fast_differ} of {len(samples)} samples"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process (both models loaded): {peak:.0f} MiB; {time.time() - started:.0f} s in all")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "model": lm.name,
                    "lengths": list(config.lengths),
                    "depths": list(config.depths),
                    "needles": args.needles,
                    "samples": len(samples),
                    "positions": n_tokens,
                    "positions_shared": n_tree,
                    "threads": torch.get_num_threads(),
                    "batch_size": batch_size,
                    "load_start": load_start,
                    "load_end": load_end,
                    "cpu": platform.processor() or platform.machine(),
                    "time": time.strftime("%Y-%m-%d %H:%M"),
                    "seconds_total": time.time() - started,
                    "peak_rss_mib": peak,
                    "totals": {k: {"wall": clocks[k].wall, "cpu": clocks[k].cpu} for k in ran},
                    "ratios": ratios,
                    "shared_runs": shared_runs,
                    "copied_identical": copied,
                    "counted_both": counted_both,
                    "paper_fast_prefill_differs": fast_differ,
                    "failures": failures,
                    "rows": rows,
                },
                f,
                indent=1,
            )
    if failures:
        print("FAILED:")
        for f in failures:
            print("  " + f)
        return 1
    print("all event checks passed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
