"""One torch runtime for the local model backends: causal-LM chat (``models/hf.py``) and
seq2seq translation (``translate/engines/seq2seq.py``).

What lives here, and why in one place:

* **Device and dtype.** ``auto`` is CUDA when a GPU is visible, else CPU. On CUDA the dtype is
  bf16 where the card supports it (Ampere and later), else fp16. On CPU it is bf16 where bf16
  matrix multiplies run natively faster than fp32, fp32 elsewhere: AMX tiles (``amx_bf16``)
  always are; ``avx512_bf16`` alone is measured, once per machine, because the flag does not
  settle it (on one host with it, a 2-thread matmul ran bf16 420 vs fp32 189 GFLOP/s; on another
  with the same flags and no AMX, bf16 ran at 0.57x fp32); without either flag bf16 is emulated
  and slower. The measurement is cached (``cpu-bf16.json`` in the user cache) so that the choice,
  and with it every signature, stays the same from run to run; ``XSAFETY_CPU_BF16=1/0`` pins it.
  The dtype changes outputs, so backends put it in their signatures; the device does not.
* **Threads.** torch uses every core it is given; on a machine shared with other jobs that
  oversubscribes the cores, and a torch thread that is descheduled stalls the others at every
  barrier (measured: at load 8-9 on 2 cores, 1 thread ran 3x faster than 2). The count is chosen
  from the cores this process may use (``os.sched_getaffinity``) minus the whole cores other
  processes kept busy while the model loaded (``/proc/stat`` less this process's own CPU time),
  unless the user sets it (``XSAFETY_TORCH_THREADS`` or a backend's ``threads`` option). The
  1-minute load average is only the fallback: it still counts work that ended up to a minute ago
  (the load ``scripts/setup.sh`` left made a run on a quiet machine pick 1 thread: 150 against
  226 tok/s with 2).
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
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from dataclasses import dataclass
from typing import Any, TypeVar

from xsafety.errors import InputError

log = logging.getLogger(__name__)

THREADS_ENV = "XSAFETY_TORCH_THREADS"
CPUINFO = Path("/proc/cpuinfo")
LOADAVG = Path("/proc/loadavg")
PROC_STAT = Path("/proc/stat")
# The shortest window CPU use is measured over: shorter reads scheduler noise.
MIN_SAMPLE_SECONDS = 0.3

# CPU flags that mean bf16 matrix multiplies run faster than fp32: AMX tiles.
NATIVE_BF16_FLAGS = frozenset({"amx_bf16"})
# A flag that makes bf16 possibly, not surely, faster: on a host with avx512_bf16 and AMX hidden
# by the hypervisor (Xeon model 207), bf16 cost more CPU time per generated token than fp32
# (SmolLM2, 1 thread: 71/59/72 vs 73/67/70 tok per CPU-second) and a 2048^3 matmul ran at 145 vs
# 256 GFLOP/s; the host with the same flags measured bf16 2.2x faster. So it is measured.
MAYBE_BF16_FLAGS = frozenset({"avx512_bf16"})
BF16_ENV = "XSAFETY_CPU_BF16"
BF16_PROBE_FILE = "cpu-bf16.json"
# bf16 changes answers (51 of 64 greedy SmolLM2 answers differed from fp32), so it must buy a
# clear speed-up, beyond what load from other jobs can fake (a 2-thread probe on a loaded host
# that measured 0.6-0.9 quiet read up to 1.45), and the host that motivated it measured ~2x.
BF16_MIN_SPEEDUP = 1.5

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


def _cpuinfo_field(names: tuple[str, ...], cpuinfo: Path) -> str | None:
    """The value of the first line of ``cpuinfo`` whose key is one of ``names`` (the first CPU's),
    or ``None`` where there is no such line or file."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in names:
            return value.strip()
    return None


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The feature flags of the first CPU in ``/proc/cpuinfo`` (empty where there is no such file)."""
    return frozenset((_cpuinfo_field(("flags", "Features"), cpuinfo) or "").split())


def cpu_model_name(cpuinfo: Path = CPUINFO) -> str:
    """The ``model name`` line of ``/proc/cpuinfo`` (empty where there is none)."""
    return _cpuinfo_field(("model name",), cpuinfo) or ""


# One decoder layer's linear maps at decode time (q, k, v, o, gate, up, down of a small Llama:
# hidden 576, 3 KV heads of 64, MLP 1536, as SmolLM2), 64 rows: the matmuls that are ~70% of a
# decode step. Square matmuls mislead here: on one host bf16 lost at 2048^3 and at these shapes alike,
# while fp32's small-row matmuls are where a 2-thread fp32 run loses most.
PROBE_ROWS = 64
PROBE_LAYER = ((576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536))


def bf16_matmul_speedup(rounds: int = 15) -> float:
    """fp32 time over bf16 time of a small Llama layer's decode matmuls (``PROBE_LAYER`` at
    ``PROBE_ROWS`` rows), best of ``rounds`` interleaved runs each, on torch's current threads
    (well under a second)."""
    import time

    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(0)
    layers = {
        dtype: [
            (torch.randn(PROBE_ROWS, k, generator=generator).to(dtype), torch.randn(n, k, generator=generator).to(dtype))
            for n, k in PROBE_LAYER
        ]
        for dtype in (torch.float32, torch.bfloat16)
    }
    best: dict[Any, float] = {}
    with torch.inference_mode():
        for _ in range(rounds):
            # Interleaved, so load from other jobs hits both alike; best-of drops descheduled runs.
            for dtype, pairs in layers.items():
                for x, w in pairs:
                    F.linear(x, w)
                started = time.perf_counter()
                for _ in range(4):
                    for x, w in pairs:
                        F.linear(x, w)
                elapsed = time.perf_counter() - started
                best[dtype] = min(best.get(dtype, elapsed), elapsed)
    return best[torch.float32] / best[torch.bfloat16]


def _probe_on_every_core() -> float:
    """``bf16_matmul_speedup`` on one torch thread per available core (the machine's own figure,
    whatever thread count this run's load leads to), then torch's thread count as it was."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(available_cores())
    try:
        return bf16_matmul_speedup()
    finally:
        torch.set_num_threads(before)


def _probe_key(flags: frozenset[str]) -> str:
    """What the cached measurement is valid for: the CPU's name and flags, and torch's version."""
    import hashlib

    import torch

    digest = hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:12]
    return f"{cpu_model_name()}|cores:{available_cores()}|flags:{digest}|torch:{torch.__version__}"


def measured_bf16_speedup(flags: frozenset[str], probe: Callable[[], float] | None = None, cache_file: Path | None = None) -> float:
    """The bf16 speed-up of this CPU, measured once (``probe``) and then read from ``cache_file``
    (default ``cpu-bf16.json`` in the user cache), so that later runs choose the same dtype."""
    import json

    from xsafety.data import cache_dir

    path = cache_file or cache_dir() / BF16_PROBE_FILE
    key = _probe_key(flags)
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    entry = known.get(key)
    if isinstance(entry, dict) and isinstance(entry.get("speedup"), (int, float)):
        return float(entry["speedup"])
    speedup = (probe or _probe_on_every_core)()
    log.info("bf16 matmul on this CPU: %.2fx fp32 (measured once, kept in %s)", speedup, path)
    known[key] = {"speedup": round(speedup, 3)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(known, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:  # a read-only home: the choice still holds for this run
        log.warning("cannot keep the bf16 measurement in %s: %s", path, exc)
    return speedup


def _pinned_bf16() -> str | None:
    """``XSAFETY_CPU_BF16`` (``1`` or ``0``) when set; another value is an ``InputError``."""
    pinned = os.environ.get(BF16_ENV, "").strip()
    if pinned and pinned not in ("0", "1"):
        raise InputError(f"{BF16_ENV}={pinned!r}: use 1 (bf16) or 0 (fp32)", field=BF16_ENV)
    return pinned or None


def cpu_bf16_choice(
    flags: frozenset[str] | None = None,
    *,
    probe: Callable[[], float] | None = None,
    cache_file: Path | None = None,
) -> tuple[bool, str]:
    """Whether the CPU multiplies bf16 matrices clearly faster than fp32, and why: ``XSAFETY_CPU_BF16``
    (``1``/``0``) when set; else yes with AMX, no without ``avx512_bf16``, and with
    ``avx512_bf16`` alone whether the cached measurement reached ``BF16_MIN_SPEEDUP``."""
    pinned = _pinned_bf16()
    if pinned is not None:
        return pinned == "1", f"pinned by {BF16_ENV}={pinned}"
    flags = cpu_flags() if flags is None else flags
    if flags & NATIVE_BF16_FLAGS:
        return True, "AMX"
    if not flags & MAYBE_BF16_FLAGS:
        return False, "no bf16 instructions"
    speedup = measured_bf16_speedup(flags, probe, cache_file)
    return speedup >= BF16_MIN_SPEEDUP, f"avx512_bf16; kept probe {speedup:.2f}x, bf16 needs {BF16_MIN_SPEEDUP}x"


def cpu_has_native_bf16(
    flags: frozenset[str] | None = None,
    *,
    probe: Callable[[], float] | None = None,
    cache_file: Path | None = None,
) -> bool:
    """Whether ``auto`` picks bf16 on this CPU (see ``cpu_bf16_choice``)."""
    return cpu_bf16_choice(flags, probe=probe, cache_file=cache_file)[0]


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
        # huggingface_hub's own cache lookup (what transformers' cached_file does offline): asking
        # through transformers imported it, 0.9 CPU-s in every process that only checks whether a
        # translation model is cached, such as each judge stage's back-translation engine pick.
        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache(model_id, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - not in the cache (or not a hub id): nothing to name it by
        return None, None
    if not isinstance(path, str):  # None (not cached) or the marker of a file known to be absent
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


@dataclass(frozen=True)
class CpuSample:
    """A reading of CPU time: busy and total clock ticks of the cores in our affinity mask (from
    ``/proc/stat``), this process's own CPU seconds, and the monotonic time it was taken."""

    busy_ticks: int
    total_ticks: int
    own_seconds: float
    at: float


def _stat_ticks(cpus: set[int], stat: Path) -> tuple[int, int] | None:
    """Busy and total ticks summed over ``cpus`` (``cpuN`` lines), or ``None`` when unreadable."""
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return None
    busy = total = 0
    seen = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        try:
            if int(name[3:]) not in cpus:
                continue
            fields = [int(v) for v in rest.split()]
        except ValueError:
            return None
        # user nice system idle iowait irq softirq steal (guest time is inside user already):
        # idle and iowait are free; steal is a core the hypervisor gave to someone else.
        busy += sum(fields[:8]) - fields[3] - fields[4]
        total += sum(fields[:8])
        seen += 1
    return (busy, total) if seen else None


def cpu_sample(stat: Path = PROC_STAT) -> CpuSample | None:
    """Read CPU time now (see ``CpuSample``); ``None`` where ``/proc/stat`` is not there."""
    try:
        cpus = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return None
    ticks = _stat_ticks(cpus, stat)
    if ticks is None:
        return None
    return CpuSample(ticks[0], ticks[1], time.process_time(), time.monotonic())


def busy_elsewhere(since: CpuSample, now: CpuSample) -> float | None:
    """Cores other processes kept busy between two samples, on average (this process's own CPU
    time taken out); ``None`` when no time passed between them."""
    total = now.total_ticks - since.total_ticks
    if total <= 0 or now.at <= since.at:
        return None
    ticks_per_second = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy_seconds = (now.busy_ticks - since.busy_ticks) / ticks_per_second
    own = now.own_seconds - since.own_seconds
    return max(0.0, (busy_seconds - own) / (now.at - since.at))


def free_cores(cores: int, load: float | None) -> int:
    """Cores left for us: ``cores`` minus the whole cores other work keeps busy, at least 1.

    Only whole busy cores count (``floor``): a core busy 60% of the time still gives most of a
    thread's worth, while a thread on a core that is fully taken waits at every barrier.
    """
    if load is None:
        return cores
    return max(1, min(cores, cores - math.floor(max(0.0, load))))


def _thread_count(value: int | str | None, source: str) -> int | None:
    """A thread count the user set (``None`` for unset or ``auto``); a bad one is an ``InputError``."""
    if value is None or value == "" or value == "auto":
        return None
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise InputError(f"{source} must be a whole number of threads, got {value!r}", field="threads") from None
    if count < 1:
        raise InputError(f"{source} must be at least 1, got {count}", field="threads")
    return count


def check_environment() -> None:
    """Refuse a bad ``XSAFETY_TORCH_THREADS`` or ``XSAFETY_CPU_BF16`` when a command starts (one
    line, exit 2), before it makes a run folder, rather than as a failed model item later."""
    _thread_count(os.environ.get(THREADS_ENV), THREADS_ENV)
    _pinned_bf16()


def choose_threads(requested: int | str | None = None, since: CpuSample | None = None) -> tuple[int, str]:
    """The torch thread count and why: the caller's value, else ``XSAFETY_TORCH_THREADS``, else
    the cores free right now (``free_cores`` over the affinity mask and the cores other processes
    kept busy since ``since``, a ``cpu_sample`` taken at least ``MIN_SAMPLE_SECONDS`` before, which
    this waits out; the 1-minute load average where CPU time cannot be read)."""
    for value, source in ((requested, "threads option"), (os.environ.get(THREADS_ENV), THREADS_ENV)):
        count = _thread_count(value, source)
        if count is not None:
            return count, f"set by {source}"
    cores = available_cores()
    since = since or cpu_sample()
    if since is not None:
        time.sleep(max(0.0, MIN_SAMPLE_SECONDS - (time.monotonic() - since.at)))
        now = cpu_sample()
        busy = busy_elsewhere(since, now) if now is not None else None
        if busy is not None and now is not None:
            count = free_cores(cores, busy)
            return count, f"{cores} cores available, {busy:.2f} kept busy by other processes over {now.at - since.at:.1f} s"
    load = load_average()
    count = free_cores(cores, load)
    load_text = "unknown" if load is None else f"{load:.2f}"
    return count, f"{cores} cores available, load average {load_text}"


def apply_threads(requested: int | str | None = None, since: CpuSample | None = None) -> int:
    """Set torch's intra-op thread count (``choose_threads``) and log the choice; returns it."""
    import torch

    count, why = choose_threads(requested, since)
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
