"""One torch runtime for the local model backends: causal-LM chat (``models/hf.py``) and
seq2seq translation (``translate/engines/seq2seq.py``).

What lives here, and why in one place:

* **Device and dtype.** ``auto`` is CUDA when a GPU is visible, else CPU. On CUDA the dtype is
  bf16 where the card supports it (Ampere and later), else fp16; on CPU it is bf16 where the CPU
  has AMX tiles (``amx_bf16`` in ``/proc/cpuinfo``) and fp32 elsewhere: without AMX, bf16 was
  measured no faster than fp32 even with ``avx512_bf16`` (see ``NATIVE_BF16_FLAGS``), and
  elsewhere it is emulated and slower. The dtype changes outputs, so backends put it in their
  signatures; the device does not.
* **Threads.** torch uses every core it is given; on a machine shared with other jobs that
  oversubscribes the cores, and a torch thread that is descheduled stalls the others at every
  barrier (measured: at load 8-9 on 2 cores, 1 thread ran 3x faster than 2). The count is chosen
  from the cores this process may use (``os.sched_getaffinity``) minus the 1-minute load average,
  unless the user sets it (``XSAFETY_TORCH_THREADS`` or a backend's ``threads`` option).
* **Batch packing** under a token budget with a cost function per use: a causal LM pays for
  prompt + new tokens per row, an encoder-decoder for its longest source times its beams.
* **The out-of-memory split.** A batch that runs out of memory is retried as two halves. The
  retry happens after the ``except`` block has ended, so the failed attempt's traceback (and with
  it every tensor its frames held) is gone before the halves start; then ``gc`` and the CUDA
  cache are emptied. Retrying from inside the ``except`` block kept the failed batch alive and
  made the halves likely to fail too.
"""

from __future__ import annotations

import gc
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from xsafety.errors import InputError

log = logging.getLogger(__name__)

THREADS_ENV = "XSAFETY_TORCH_THREADS"
CPUINFO = Path("/proc/cpuinfo")
LOADAVG = Path("/proc/loadavg")

# CPU flags that mean bf16 matrix multiplies run faster than fp32: AMX tiles. AVX-512 BF16 alone
# is not enough: on this machine (Xeon model 207, avx512_bf16, AMX hidden by the hypervisor) bf16
# cost the same CPU time per generated token as fp32 (SmolLM2, 1 thread, 3 interleaved rounds:
# 71/59/72 vs 73/67/70 tok per CPU-second) and a 1024^3 matmul ran at 80 vs 147 GFLOP/s, while it
# changes answers. ``dtype = "bfloat16"`` still asks for it explicitly.
NATIVE_BF16_FLAGS = frozenset({"amx_bf16"})

DTYPE_ALIASES: dict[str, str] = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}

T = TypeVar("T")
R = TypeVar("R")


# -- device and dtype -----------------------------------------------------------------------------


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The feature flags of the first CPU in ``/proc/cpuinfo`` (empty where there is no such file)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU multiplies bf16 matrices faster than fp32 (AMX; see ``NATIVE_BF16_FLAGS``)."""
    return bool((cpu_flags() if flags is None else flags) & NATIVE_BF16_FLAGS)


def pick_device(device: str = "auto") -> str:
    """``auto`` means CUDA when a GPU is visible, else CPU; anything else is passed through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def auto_dtype_name(device: str, *, cuda_bf16: bool | None = None, cpu_bf16: bool | None = None) -> str:
    """The dtype ``auto`` stands for on ``device`` (the two flags override detection, for tests)."""
    if device.startswith("cuda"):
        if cuda_bf16 is None:
            import torch

            cuda_bf16 = bool(torch.cuda.is_bf16_supported())
        # Older cards (before Ampere) emulate bf16 slowly or not at all; fp16 halves memory there.
        return "bfloat16" if cuda_bf16 else "float16"
    if device == "cpu" or device.startswith("cpu:"):
        return "bfloat16" if (cpu_has_native_bf16() if cpu_bf16 is None else cpu_bf16) else "float32"
    return "float32"


def dtype_name(dtype: str | None, device: str) -> str:
    """The torch dtype name (``float32``, ``bfloat16``, ``float16``) for a user's ``dtype`` setting.

    ``auto`` (or nothing) follows ``auto_dtype_name``; anything else must be a known alias.
    """
    if not dtype or dtype == "auto":
        return auto_dtype_name(device)
    if dtype not in DTYPE_ALIASES:
        raise InputError(f"unknown dtype {dtype!r} (auto, float32, bfloat16, float16)", field="dtype")
    return DTYPE_ALIASES[dtype]


def pick_dtype(dtype: str | None, device: str) -> Any:
    """The ``torch.dtype`` for a user's ``dtype`` setting on ``device`` (see ``dtype_name``)."""
    import torch

    return getattr(torch, dtype_name(dtype, device))


# -- hub models -----------------------------------------------------------------------------------


def hub_snapshot(model_id: str, revision: str | None = None) -> tuple[str | None, Path | None]:
    """The commit hash and snapshot folder of a hub model in the local HF cache, or ``(None, None)``.

    Call it after loading: before the first download the cache holds nothing, and a signature
    built from that would differ from every later one.
    """
    try:
        from transformers.utils import cached_file

        path = cached_file(model_id, "config.json", revision=revision, local_files_only=True)
    except Exception:  # noqa: BLE001 - not in the cache (or not a hub id): nothing to name it by
        return None, None
    if path is None:
        return None, None
    snapshot = Path(path).parent
    return snapshot.name, snapshot


# -- threads --------------------------------------------------------------------------------------


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, which containers and ``taskset`` narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def load_average(loadavg: Path = LOADAVG) -> float | None:
    """The 1-minute load average, or ``None`` where the system does not publish one."""
    try:
        return float(loadavg.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def free_cores(cores: int, load: float | None) -> int:
    """Cores left for us: ``cores`` minus the whole cores other work keeps busy, at least 1.

    Only whole busy cores count (``floor``): a core busy 60% of the time still gives most of a
    thread's worth, while a thread on a core that is fully taken waits at every barrier.
    """
    if load is None:
        return cores
    return max(1, min(cores, cores - math.floor(max(0.0, load))))


def choose_threads(requested: int | str | None = None) -> tuple[int, str]:
    """The torch thread count and why: the caller's value, else ``XSAFETY_TORCH_THREADS``, else
    the cores free right now (``free_cores`` over the affinity mask and the load average)."""
    for value, source in ((requested, "threads option"), (os.environ.get(THREADS_ENV), THREADS_ENV)):
        if value is None or value == "" or value == "auto":
            continue
        try:
            count = int(value)
        except (TypeError, ValueError):
            raise InputError(f"{source} must be a whole number of threads, got {value!r}", field="threads") from None
        if count < 1:
            raise InputError(f"{source} must be at least 1, got {count}", field="threads")
        return count, f"set by {source}"
    cores, load = available_cores(), load_average()
    count = free_cores(cores, load)
    load_text = "unknown" if load is None else f"{load:.2f}"
    return count, f"{cores} cores available, load average {load_text}"


def apply_threads(requested: int | str | None = None) -> int:
    """Set torch's intra-op thread count (``choose_threads``) and log the choice; returns it."""
    import torch

    count, why = choose_threads(requested)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    log.info("torch threads: %d (%s)", count, why)
    return count


# -- batch packing --------------------------------------------------------------------------------


def causal_lm_cost(max_new_tokens: int) -> Callable[[int, int], int]:
    """Cost of a left-padded decoder-only batch: every row holds the longest prompt plus the new tokens."""
    return lambda rows, longest: rows * (longest + max_new_tokens)


def seq2seq_cost(beams: int) -> Callable[[int, int], int]:
    """Cost of an encoder-decoder batch: every row pads to the longest source, once per beam."""
    return lambda rows, longest: rows * longest * max(1, beams)


def pack_batches(
    sizes: Sequence[int],
    budget: int,
    cost: Callable[[int, int], int],
    *,
    max_rows: int | None = None,
    longest_first: bool = False,
) -> list[list[int]]:
    """Indices grouped into batches of similar size, each with ``cost(rows, longest) <= budget``
    and at most ``max_rows`` rows; every index appears once.

    Sorting by size keeps padding small. A single item over the budget gets a batch of its own
    rather than being dropped. ``longest_first`` packs the longest items first (a translation
    engine then meets its worst batch, and any out-of-memory error, at once).
    """
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i] if longest_first else sizes[i])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        grown = max(longest, sizes[i])
        too_many = max_rows is not None and len(current) >= max_rows
        if current and (too_many or cost(len(current) + 1, grown) > budget):
            batches.append(current)
            current, grown = [], sizes[i]
        current.append(i)
        longest = grown
    if current:
        batches.append(current)
    return batches


# -- out of memory --------------------------------------------------------------------------------


def free_memory(device: str) -> None:
    """Collect garbage and, on CUDA, hand cached blocks back so the next attempt can use them."""
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def run_split_on_oom(
    items: Sequence[T],
    step: Callable[[Sequence[T]], list[R]],
    on_single_oom: Callable[[T], R],
    *,
    device: str,
    on_oom: Callable[[], None] | None = None,
) -> list[R]:
    """``step(items)``, retried as two halves (recursively) whenever a batch runs out of memory.

    Results come back in the order of ``items``. A single item that still runs out of memory
    gets ``on_single_oom(item)`` instead of stopping the run; ``on_oom`` is told of every
    out-of-memory error (a caller whose step keeps its own row cap halves it). The retry is deliberately outside
    the ``except`` block: only once it has ended are the failed attempt's frames and tensors
    released, and ``free_memory`` can give their memory back before the halves run.
    """
    import torch

    results: list[R] = []
    # A stack of pending parts, the next part on top; halves are pushed second-half first.
    pending: list[Sequence[T]] = [items]
    while pending:
        part = pending.pop()
        outcome: list[R] | None = None
        try:
            outcome = step(part)
        except torch.OutOfMemoryError:
            pass  # handled below, once this block (and the traceback it holds) is gone
        if outcome is not None:
            results.extend(outcome)
            continue
        free_memory(device)
        if on_oom is not None:
            on_oom()
        if len(part) == 1:
            log.warning("out of memory on a single item: giving up on it")
            results.append(on_single_oom(part[0]))
            continue
        half = len(part) // 2
        log.warning("out of memory at batch %d: retrying as batches of %d and %d", len(part), half, len(part) - half)
        pending.append(part[half:])
        pending.append(part[:half])
    return results
