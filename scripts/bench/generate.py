"""Benchmark the generation backends; prints figures, asserts nothing.

1. SmolLM2 (the built-in default) on this machine: tokens/s of xsafety's batched generation vs
   one prompt at a time with plain ``model.generate`` (what typical safety scripts do).
   Target: >= 3x on CPU.
2. The HTTP backend against the fake OpenAI server with a fixed latency: requests/s as a fraction
   of the ideal ``concurrency / latency``. Target: >= 90% at concurrency 64.

Usage: ``.venv/bin/python scripts/bench/generate.py [--prompts 32] [--new-tokens 64] [--skip-local]``
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from fake_openai_server import start_server  # noqa: E402

from xsafety.models import ChatRequest, Decoding, load_model  # noqa: E402
from xsafety.models.hf import HFChatModel  # noqa: E402
from xsafety.taxonomy import load_set  # noqa: E402


def bench_local(n_prompts: int, new_tokens: int, sequential_prompts: int) -> None:
    """Batched xsafety generation vs plain one-at-a-time ``generate`` on SmolLM2."""
    import torch

    prompts = [p.text for p in load_set("builtin")[:n_prompts]]
    model = load_model("smollm2", Decoding(max_new_tokens=new_tokens))
    assert isinstance(model, HFChatModel)
    requests = [ChatRequest(f"r{i}", ({"role": "user", "content": p},)) for i, p in enumerate(prompts)]
    model.chat(requests[:2])  # warm-up: first calls pay one-off allocation costs

    started = time.perf_counter()
    results = model.chat(requests)
    batched_s = time.perf_counter() - started
    batched_tokens = sum(r.completion_tokens or 0 for r in results)

    # The baseline: one prompt at a time, plain generate, no padding, what most scripts do.
    # Timed on a subset of the same prompts (it is slow) and compared as tokens per second.
    tok, hf = model.tokenizer, model.model
    seq_tokens = 0
    started = time.perf_counter()
    for req in requests[:sequential_prompts]:
        ids = tok.apply_chat_template(list(req.messages), add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            out = hf.generate(**ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        seq_tokens += out.shape[1] - ids["input_ids"].shape[1]
    seq_s = time.perf_counter() - started

    batched_rate = batched_tokens / batched_s
    seq_rate = seq_tokens / seq_s
    print(f"local SmolLM2-135M ({model.device}, {model.torch_dtype}), {new_tokens} new tokens max, torch threads {torch.get_num_threads()}")
    print(f"  batched (xsafety, {len(requests)} prompts, budget {model.batch_tokens} tokens): "
          f"{batched_tokens} tokens in {batched_s:.1f} s = {batched_rate:.1f} tok/s")
    print(f"  one at a time (plain generate, {sequential_prompts} prompts): {seq_tokens} tokens in {seq_s:.1f} s = {seq_rate:.1f} tok/s")
    print(f"  speed-up: {batched_rate / seq_rate:.1f}x (target >= 3x on CPU)")
    model.close()


def bench_http(concurrency: int, latency_s: float, n_requests: int, in_process: bool) -> None:
    """Requests/s through the HTTP backend against a server with a fixed latency.

    The server runs in its own process by default, as a real server would: sharing this
    process's GIL would charge the server's Python overhead to the client.
    """
    if in_process:
        with start_server(latency_s=latency_s) as server:
            _bench_http_against(server.url, concurrency, latency_s, n_requests)
        return
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "fake_openai_server.py"), "--latency", str(latency_s)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip() if proc.stdout else ""
        _bench_http_against(url, concurrency, latency_s, n_requests)
    finally:
        proc.terminate()
        proc.wait()


def _bench_http_against(url: str, concurrency: int, latency_s: float, n_requests: int) -> None:
    model = load_model(f"openai:bench@{url}", Decoding(max_new_tokens=16), concurrency=concurrency)
    requests = [ChatRequest(f"r{i}", ({"role": "user", "content": f"question {i}"},)) for i in range(n_requests)]
    model.chat(requests[:concurrency])  # warm-up: opens the connection pool
    started = time.perf_counter()
    results = model.chat(requests)
    elapsed = time.perf_counter() - started
    failed = sum(1 for r in results if r.error)
    mean_latency = sum(r.latency_s or 0 for r in results) / len(results)
    rate = n_requests / elapsed
    ideal = concurrency / latency_s
    print(f"http backend, concurrency {concurrency}, server latency {latency_s * 1000:.0f} ms, {n_requests} requests:")
    print(f"  {rate:.1f} req/s of an ideal {ideal:.1f} = {rate / ideal:.0%} (target >= 90%); "
          f"mean latency seen by the client {mean_latency * 1000:.0f} ms; failed {failed}")


def main() -> None:
    """Run both benchmarks and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--sequential-prompts", type=int, default=8, help="prompts timed one at a time")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--requests", type=int, default=1280)
    parser.add_argument("--skip-local", action="store_true")
    parser.add_argument("--server-in-process", action="store_true", help="run the fake server in this process")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    bench_http(args.concurrency, args.latency, args.requests, args.server_in_process)
    if not args.skip_local:
        bench_local(args.prompts, args.new_tokens, args.sequential_prompts)


if __name__ == "__main__":
    main()
