"""The shared torch runtime: dtype and device choice, thread count, batch packing, the OOM split."""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch

from xsafety import torch_runtime as rt
from xsafety.errors import InputError

# -- dtype ----------------------------------------------------------------------------------------

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu vme sse sse2 avx2 {extra} avx512f
bugs\t\t: spectre_v1

processor\t: 1
flags\t\t: fpu vme sse sse2 avx2 {extra} avx512f
"""


@pytest.mark.parametrize(
    ("extra", "native"),
    # AMX always means bf16; no bf16 flag never; avx512_bf16 alone is decided by measurement
    # (here a probe that says bf16 is slower, as it was on one host with that flag).
    [("avx512_bf16 amx_bf16 amx_tile", True), ("amx_bf16 amx_tile", True), ("avx512_bf16", False), ("", False)],
)
def test_native_bf16_is_read_from_cpuinfo_flags(tmp_path: Path, extra: str, native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(rt.BF16_ENV, raising=False)
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO.format(extra=extra))
    flags = rt.cpu_flags(info)
    assert "avx2" in flags and "spectre_v1" not in flags
    slower = lambda: 0.57  # noqa: E731
    assert rt.cpu_has_native_bf16(flags, probe=slower, cache_file=tmp_path / "probe.json") is native
    assert rt.auto_dtype_name("cpu", cpu_bf16=native) == ("bfloat16" if native else "float32")


def test_avx512_bf16_alone_is_measured_once_and_the_choice_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(rt.BF16_ENV, raising=False)
    flags = frozenset({"avx2", "avx512f", "avx512_bf16"})
    cache = tmp_path / "cpu-bf16.json"
    calls: list[float] = []

    def probe(value: float) -> Callable[[], float]:
        def run() -> float:
            calls.append(value)
            return value

        return run

    assert rt.cpu_has_native_bf16(flags, probe=probe(2.2), cache_file=cache) is True
    # A second run reads the kept figure: a different (noisy) measurement cannot flip the dtype,
    # and with it every response key.
    assert rt.cpu_has_native_bf16(flags, probe=probe(0.5), cache_file=cache) is True
    assert calls == [2.2]
    # Another CPU (other flags) is measured on its own.
    assert rt.cpu_has_native_bf16(flags | {"avx512_fp16"}, probe=probe(1.1), cache_file=cache) is False
    assert calls == [2.2, 1.1]
    # A damaged cache file is measured again, not trusted.
    cache.write_text("not json")
    assert rt.cpu_has_native_bf16(flags, probe=probe(0.6), cache_file=cache) is False


def test_bf16_can_be_pinned_by_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def never() -> float:
        raise AssertionError("a pinned choice must not measure")

    monkeypatch.setenv(rt.BF16_ENV, "1")
    assert rt.cpu_has_native_bf16(frozenset(), probe=never, cache_file=tmp_path / "p.json") is True
    monkeypatch.setenv(rt.BF16_ENV, "0")
    assert rt.cpu_has_native_bf16(frozenset({"amx_bf16"}), probe=never) is False
    assert rt.cpu_bf16_choice(frozenset({"amx_bf16"}), probe=never) == (False, f"pinned by {rt.BF16_ENV}=0")
    monkeypatch.setenv(rt.BF16_ENV, "yes")
    with pytest.raises(InputError, match="XSAFETY_CPU_BF16"):
        rt.cpu_has_native_bf16(frozenset())


def test_the_bf16_probe_measures_a_positive_ratio() -> None:
    speedup = rt.bf16_matmul_speedup(rounds=1)
    assert 0.05 < speedup < 50


def test_missing_cpuinfo_means_no_flags(tmp_path: Path) -> None:
    assert rt.cpu_flags(tmp_path / "absent") == frozenset()
    assert rt.cpu_has_native_bf16(frozenset()) is False


def test_cuda_gets_bf16_only_where_the_card_supports_it() -> None:
    assert rt.auto_dtype_name("cuda", cuda_bf16=True) == "bfloat16"
    assert rt.auto_dtype_name("cuda:1", cuda_bf16=False) == "float16"


def test_auto_dtype_on_this_cpu_follows_its_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(rt.BF16_ENV, raising=False)
    monkeypatch.setattr(rt, "cpu_flags", lambda cpuinfo=rt.CPUINFO: frozenset({"avx512_bf16", "amx_bf16"}))
    assert rt.pick_dtype("auto", "cpu") is torch.bfloat16
    monkeypatch.setattr(rt, "cpu_flags", lambda cpuinfo=rt.CPUINFO: frozenset({"avx2"}))
    assert rt.pick_dtype("auto", "cpu") is torch.float32
    # The user's choice wins over detection, under any alias.
    assert rt.pick_dtype("bf16", "cpu") is torch.bfloat16
    assert rt.dtype_name("half", "cuda") == "float16"
    assert rt.dtype_name(None, "cpu") == "float32"


def test_unknown_dtype_names_the_field() -> None:
    with pytest.raises(InputError, match="unknown dtype 'float8'") as err:
        rt.dtype_name("float8", "cpu")
    assert err.value.field == "dtype"


# -- threads --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cores", "load", "free"),
    [(2, 0.3, 2), (2, 0.99, 2), (2, 1.5, 1), (2, 8.7, 1), (16, 3.2, 13), (4, None, 4), (2, -1.0, 2)],
)
def test_free_cores_leave_out_whole_busy_cores(cores: int, load: float | None, free: int) -> None:
    assert rt.free_cores(cores, load) == free


def test_load_average_reads_the_first_field(tmp_path: Path) -> None:
    path = tmp_path / "loadavg"
    path.write_text("1.75 1.20 0.90 3/120 4242\n")
    assert rt.load_average(path) == 1.75
    path.write_text("")
    assert rt.load_average(path) is None
    assert rt.load_average(tmp_path / "absent") is None


def _stat(path: Path, cpus: dict[int, tuple[int, ...]]) -> None:
    lines = ["cpu  1 2 3 4 5 6 7 8 0 0"]  # the all-CPU line is ignored: only our affinity mask counts
    lines += [f"cpu{n} " + " ".join(map(str, v)) for n, v in cpus.items()]
    path.write_text("\n".join(lines + ["intr 12345", "ctxt 99"]) + "\n")


def test_stat_ticks_sum_busy_and_total_over_our_cpus(tmp_path: Path) -> None:
    path = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    _stat(path, {0: (100, 0, 50, 800, 20, 5, 5, 20, 30, 0), 1: (10, 0, 0, 90, 0, 0, 0, 0, 0, 0), 2: (999, 0, 0, 1, 0, 0, 0, 0, 0, 0)})
    # cpu2 is outside the mask; guest is inside user already; idle and iowait are not busy
    assert rt._stat_ticks({0, 1}, path) == (180 + 10, 1000 + 100)
    assert rt._stat_ticks({5}, path) is None
    assert rt._stat_ticks({0}, tmp_path / "absent") is None


def test_busy_elsewhere_takes_out_our_own_cpu_time() -> None:
    tick = os.sysconf("SC_CLK_TCK")
    since = rt.CpuSample(busy_ticks=0, total_ticks=0, own_seconds=10.0, at=100.0)
    # 2 s on 2 cores: 3 core-seconds busy, 1.2 of them ours -> others kept 0.9 cores busy
    now = rt.CpuSample(busy_ticks=3 * tick, total_ticks=4 * tick, own_seconds=11.2, at=102.0)
    assert rt.busy_elsewhere(since, now) == pytest.approx(0.9)
    assert rt.busy_elsewhere(since, since) is None
    # our own time counted by a finer clock than the ticks never makes others' use negative
    mine = rt.CpuSample(busy_ticks=1 * tick, total_ticks=4 * tick, own_seconds=11.5, at=102.0)
    assert rt.busy_elsewhere(since, mine) == 0.0


def test_thread_choice_measures_cpu_use_not_the_stale_load_average(monkeypatch: pytest.MonkeyPatch) -> None:
    """A load average left by work that has ended (5.4 on 2 cores) must not cost a thread when
    the cores were free while the model loaded; cores that were busy must."""
    monkeypatch.delenv(rt.THREADS_ENV, raising=False)
    monkeypatch.setattr(rt, "available_cores", lambda: 2)
    monkeypatch.setattr(rt, "load_average", lambda loadavg=rt.LOADAVG: 5.4)
    tick = os.sysconf("SC_CLK_TCK")
    since = rt.CpuSample(0, 0, 0.0, time.monotonic() - 1.0)
    quiet = rt.CpuSample(int(0.1 * tick), 2 * tick, 0.0, time.monotonic())
    monkeypatch.setattr(rt, "cpu_sample", lambda stat=rt.PROC_STAT: quiet)
    count, why = rt.choose_threads(since=since)
    assert count == 2 and "0.10 kept busy by other processes" in why
    busy = rt.CpuSample(int(1.6 * tick), 2 * tick, 0.0, time.monotonic())
    monkeypatch.setattr(rt, "cpu_sample", lambda stat=rt.PROC_STAT: busy)
    assert rt.choose_threads(since=since)[0] == 1
    # where CPU time cannot be read, the load average decides
    monkeypatch.setattr(rt, "cpu_sample", lambda stat=rt.PROC_STAT: None)
    count, why = rt.choose_threads()
    assert count == 1 and "load average 5.40" in why


def test_cpu_sample_reads_this_machine() -> None:
    if not rt.PROC_STAT.exists():
        pytest.skip("no /proc/stat on this system")
    first = rt.cpu_sample()
    sum(i * i for i in range(200_000))  # some CPU time of our own
    second = rt.cpu_sample()
    assert first is not None and second is not None
    assert second.total_ticks >= first.total_ticks and second.own_seconds > first.own_seconds


def test_thread_choice_option_then_env_then_free_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rt, "available_cores", lambda: 8)
    monkeypatch.setattr(rt, "load_average", lambda loadavg=rt.LOADAVG: 5.4)
    monkeypatch.setattr(rt, "cpu_sample", lambda stat=rt.PROC_STAT: None)
    monkeypatch.delenv(rt.THREADS_ENV, raising=False)
    count, why = rt.choose_threads()
    assert count == 3 and "8 cores" in why and "5.40" in why
    monkeypatch.setenv(rt.THREADS_ENV, "2")
    assert rt.choose_threads() == (2, f"set by {rt.THREADS_ENV}")
    assert rt.choose_threads(6) == (6, "set by threads option")
    assert rt.choose_threads("auto")[0] == 2


@pytest.mark.parametrize("bad", ["two", "0", "-3"])
def test_bad_thread_counts_name_the_field(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv(rt.THREADS_ENV, bad)
    with pytest.raises(InputError, match=rt.THREADS_ENV) as err:
        rt.choose_threads()
    assert err.value.field == "threads"


def test_apply_threads_sets_torch_and_logs_the_choice(caplog: pytest.LogCaptureFixture) -> None:
    before = torch.get_num_threads()
    try:
        with caplog.at_level(logging.INFO, logger="xsafety.torch_runtime"):
            assert rt.apply_threads(1) == 1
        assert torch.get_num_threads() == 1
        assert "torch threads: 1 (set by threads option)" in caplog.text
    finally:
        torch.set_num_threads(before)


# -- packing --------------------------------------------------------------------------------------


def test_causal_lm_packing_counts_prompt_plus_new_tokens() -> None:
    sizes = [10, 3, 7, 25, 4, 9, 12]
    cost = rt.causal_lm_cost(8)
    batches = rt.pack_batches(sizes, 60, cost, max_rows=3)
    assert sorted(i for b in batches for i in b) == list(range(len(sizes)))
    for batch in batches:
        assert len(batch) <= 3
        assert len(batch) == 1 or len(batch) * (max(sizes[i] for i in batch) + 8) <= 60
    # Sorted ascending, so each batch holds neighbours in length.
    flat = [sizes[i] for b in batches for i in b]
    assert flat == sorted(sizes)
    # 25 + 8 = 33 fits alone, and 2 x 33 does not: the longest prompt runs by itself.
    assert [3] in batches


def test_seq2seq_packing_counts_beams_and_starts_with_the_longest() -> None:
    sizes = [5, 40, 12, 3, 18]
    batches = rt.pack_batches(sizes, 80, rt.seq2seq_cost(2), longest_first=True)
    assert batches[0] == [1]  # 40 x 2 beams fills the budget alone
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(sizes[i] for i in batch) * 2 <= 80
    assert sorted(i for b in batches for i in b) == list(range(len(sizes)))


def test_an_item_over_budget_gets_a_batch_of_its_own() -> None:
    assert rt.pack_batches([500, 2, 3], 10, lambda rows, longest: rows * longest) == [[1, 2], [0]]
    assert rt.pack_batches([], 10, lambda rows, longest: rows * longest) == []


# -- the out-of-memory split ----------------------------------------------------------------------


def test_oom_split_frees_the_failed_batch_before_retrying_the_halves(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[list[int]] = []
    failed: list[weakref.ref[torch.Tensor]] = []
    alive_at_retry: list[bool] = []

    def step(part: Sequence[int]) -> list[str]:
        calls.append(list(part))
        if failed:
            alive_at_retry.append(failed[0]() is not None)
        activations = torch.ones(len(part), 1024)  # what a real forward pass would hold
        if len(calls) == 1:
            failed.append(weakref.ref(activations))
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return [f"done {i}" for i in part]

    with caplog.at_level(logging.WARNING, logger="xsafety.torch_runtime"):
        out = rt.run_split_on_oom(list(range(5)), step, lambda i: f"too big {i}", device="cpu")
    assert out == [f"done {i}" for i in range(5)]
    assert calls == [[0, 1, 2, 3, 4], [0, 1], [2, 3, 4]]
    # The failed attempt's tensors were gone before the first half started.
    assert alive_at_retry == [False, False]
    assert "out of memory at batch 5: retrying as batches of 2 and 3" in caplog.text


def test_oom_split_gives_up_on_single_items_only() -> None:
    def step(part: Sequence[int]) -> list[str]:
        if 3 in part:
            raise torch.OutOfMemoryError("simulated")
        return [f"ok {i}" for i in part]

    out = rt.run_split_on_oom([0, 1, 2, 3, 4, 5], step, lambda i: f"too big {i}", device="cpu")
    assert out == ["ok 0", "ok 1", "ok 2", "too big 3", "ok 4", "ok 5"]


def test_other_errors_are_not_swallowed_by_the_split() -> None:
    def step(part: Sequence[int]) -> list[int]:
        raise ValueError("a real bug")

    with pytest.raises(ValueError, match="a real bug"):
        rt.run_split_on_oom([1, 2], step, lambda i: i, device="cpu")


def test_free_memory_empties_the_cuda_cache_only_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    emptied: list[bool] = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    rt.free_memory("cpu")
    assert emptied == []
    rt.free_memory("cuda:0")
    assert emptied == [True]


@pytest.mark.parametrize(("name", "value"), [("XSAFETY_CPU_BF16", "yes"), ("XSAFETY_TORCH_THREADS", "abc")])
def test_a_bad_runtime_variable_stops_a_command_before_it_writes(tmp_path: Path, name: str, value: str) -> None:
    import os
    import subprocess
    import sys

    run_dir = tmp_path / "run"
    env = {**os.environ, name: value}
    done = subprocess.run(
        [sys.executable, "-c", "from xsafety.cli import main; main()", "run", "--run-dir", str(run_dir)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and name in lines[0] and repr(value) in lines[0]
    assert not run_dir.exists()
