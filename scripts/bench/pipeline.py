"""How much time xsafety itself spends around the model, at XSafety scale.

Runs the whole evaluation (`xsafety run`) on the imported XSafety set (2,800 prompts, English plus
the 9 human-translated locales: 28,000 answers at full size) against a fast fake OpenAI-compatible
server on 127.0.0.1 that answers at once, so the model costs nothing and what is left is the
pipeline: loading and gating reference translations, planning, snapshots, store appends, judging
(the default refusal lexicon; back-translation does not apply to reference locales without an
engine), and the report.

The server runs in its own process and stamps the first and last request it receives. The wall
time between them is the generation window (HTTP client and server included); everything outside
it is non-model time. It prints, per size: total wall time, non-model time, the generation window
and its cost per request, and the non-model time per answer, then how non-model time grows from
the smallest to the largest size (linear or better is the goal: the ratio of per-answer costs).

The xsafety process is started through a small driver that times each stage function of
``xsafety.run`` (wall and CPU seconds; the imports before the CLI starts apart), so the split by
stage is printed too; the generation stage's line includes the generation window (the HTTP client's
own work is in it: compare its CPU seconds with the window). ``--profile DIR`` writes a cProfile
of each size's run to ``DIR/run-<answers>.prof`` (profiling slows Python-heavy stages severalfold:
take the split from a run without it).

    .venv/bin/python scripts/bench/pipeline.py                  # 2,800 and 28,000 answers
    .venv/bin/python scripts/bench/pipeline.py --sizes 2800     # one size only
    .venv/bin/python scripts/bench/pipeline.py --sizes 28000 --profile /tmp/prof

Needs ../shared/data/xsafety_parallel.jsonl beside the checkout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "xsafety_parallel.jsonl"
LOCALES = ["zh", "ar", "bn", "de", "es", "fr", "hi", "ja", "ru"]
ANSWER = "I'm sorry, but I can't help with that request."


def _serve(port_out: "mp.Queue[int]", stamps: str) -> None:
    """A minimal HTTP/1.1 keep-alive server that answers every chat completion at once."""

    body = json.dumps({
        "id": "x", "object": "chat.completion", "created": 0, "model": "fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 12, "total_tokens": 22},
    }).encode()
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    state = {"first": 0.0, "last": 0.0, "n": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in header.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                now = time.time()
                state["first"] = state["first"] or now
                state["last"] = now
                state["n"] += 1
                writer.write(head + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port_out.put(server.sockets[0].getsockname()[1])

        async def dump() -> None:
            while True:
                await asyncio.sleep(0.5)
                # Whole or not at all: the bench reads the file while the server may be writing it.
                Path(stamps + ".tmp").write_text(json.dumps(state))
                os.replace(stamps + ".tmp", stamps)

        asyncio.create_task(dump())
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# The xsafety process, wrapped: the wall and CPU seconds of each stage function of ``xsafety.run``
# (and of the imports before the CLI starts) go to the JSON file named by XSAFETY_BENCH_STAGES, and
# with XSAFETY_BENCH_PROFILE a cProfile of the whole process goes to that file. The wrapping only
# measures: every stage runs as the CLI runs it.
_DRIVER = r"""
import atexit, json, os, sys, time
_out = os.environ.get("XSAFETY_BENCH_STAGES")
_prof_path = os.environ.get("XSAFETY_BENCH_PROFILE")
_prof = None
if _prof_path:
    import cProfile
    _prof = cProfile.Profile()
    _prof.enable()
_stages = {}
import gc
_gc = {"start": 0.0, "cpu0": 0.0, "wall": 0.0, "cpu": 0.0}
def _gc_timer(phase, info):
    # Python's cyclic collector, whose full passes walk every live object: its share of the stages.
    if phase == "start":
        _gc["start"], _gc["cpu0"] = time.perf_counter(), time.process_time()
    else:
        _gc["wall"] += time.perf_counter() - _gc["start"]
        _gc["cpu"] += time.process_time() - _gc["cpu0"]
gc.callbacks.append(_gc_timer)
def _add(name, wall, cpu):
    w, c = _stages.get(name, (0.0, 0.0))
    _stages[name] = (w + wall, c + cpu)
def _dump():
    if _prof is not None:
        _prof.disable()
        _prof.dump_stats(_prof_path)
    _stages["garbage collection (in the stages above)"] = (_gc["wall"], _gc["cpu"])
    if _out:
        with open(_out, "w") as f:
            json.dump(_stages, f)
atexit.register(_dump)
_w, _c = time.perf_counter(), time.process_time()
from xsafety.cli import main
import xsafety.run as _run
_add("imports (CLI start)", time.perf_counter() - _w, time.process_time() - _c)
def _wrap(name, label):
    fn = getattr(_run, name)
    def timed(*a, **k):
        w, c = time.perf_counter(), time.process_time()
        try:
            return fn(*a, **k)
        finally:
            _add(label, time.perf_counter() - w, time.process_time() - c)
    setattr(_run, name, timed)
for _name, _label in [("resolve_locales", "resolve config"), ("validate", "resolve config"),
                      ("resolve", "resolve config"), ("resolved_info", "run.json"), ("write_info", "run.json"),
                      ("make_plan", "plan"), ("_translate", "translate (references, gates)"),
                      ("snapshot_inputs", "snapshot inputs"), ("_generate", "generate (incl. window)"),
                      ("_judge", "judge"), ("cells_of", "cells"), ("write_cells", "cells"),
                      ("_report", "report (compute + write)")]:
    _wrap(_name, _label)
_w, _c = time.perf_counter(), time.process_time()
try:
    main()
finally:
    _add("whole CLI call", time.perf_counter() - _w, time.process_time() - _c)
"""


def _xsafety(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", _DRIVER, *args]
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)


def run_size(answers: int, work: Path, env: dict[str, str], url: str, stamps: Path,
             profile: Path | None = None) -> dict[str, Any]:
    """One full run with ``answers`` answers (prompts x 10 languages); its timings, with the wall and
    CPU seconds per stage under "stages" (and a cProfile of the run in ``profile`` when given)."""
    prompts = answers // (len(LOCALES) + 1)
    config = work / f"pipeline-{answers}.toml"
    config.write_text(
        "\n".join([
            "[run]",
            f'dir = "{work / f"run-{answers}"}"',
            'sets = ["xsafety"]',
            f"locales = {json.dumps(LOCALES)}",
            f"limit = {prompts}",
            'judges = ["default"]',
            'judge_modes = ["native", "back-translated"]',
            "[translation]",
            'engine = "reference"',
            "[[models]]",
            f'spec = "openai:fake@{url}"',
            'name = "fake"',
            "concurrency = 64",
            "[decoding]",
            "max_new_tokens = 64",
            "[[variants]]",
            'name = "none"',
        ]) + "\n",
        encoding="utf-8",
    )
    if stamps.exists():
        stamps.unlink()
    started = time.time()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    stages_file = work / f"stages-{answers}.json"
    env = {**env, "XSAFETY_BENCH_STAGES": str(stages_file)}
    if profile is not None:
        env["XSAFETY_BENCH_PROFILE"] = str(profile)
    proc = _xsafety(["run", str(config)], env, work)
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    ended = time.time()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    time.sleep(0.6)  # the server writes its stamps every 0.5 s
    state = json.loads(stamps.read_text()) if stamps.exists() else {"first": 0, "last": 0, "n": 0}
    window = (state["last"] - state["first"]) if state["n"] else 0.0
    total = ended - started
    return {"answers": float(prompts * (len(LOCALES) + 1)), "requests": float(state["n"]), "total_s": total,
            "generation_window_s": window, "non_model_s": total - window,
            # CPU seconds of the xsafety process (user + system): steadier than wall time on a
            # shared machine; it includes the HTTP client's share of the generation window.
            "cpu_s": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
            "stages": json.loads(stages_file.read_text()) if stages_file.exists() else {}}


def _print_stages(rows: list[dict[str, Any]]) -> None:
    """Wall and CPU seconds per stage, one column pair per size; the generation stage also without
    its generation window (what xsafety spends there around the requests)."""
    names: list[str] = []
    for r in rows:
        names += [n for n in r["stages"] if n not in names]
    if not names:
        return
    print("split by stage (wall s / cpu s of the xsafety process):")
    print(f"{'stage':<34}" + "".join(f" {int(r['answers']):>15}" for r in rows))
    for name in names:
        cells = []
        for r in rows:
            wall, cpu = r["stages"].get(name, (0.0, 0.0))
            cells.append(f" {wall:>7.1f} /{cpu:>6.1f}")
        print(f"{name:<34}" + "".join(cells))
    cells = []
    for r in rows:
        wall, _ = r["stages"].get("generate (incl. window)", (0.0, 0.0))
        cells.append(f" {wall - r['generation_window_s']:>7.1f} /{'':>6}")
    print(f"{'generate outside the window':<34}" + "".join(cells))


def main() -> None:
    """Run the sizes asked for and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="2800,28000", help="answers per run, comma-separated")
    parser.add_argument("--profile", type=Path, default=None,
                        help="write a cProfile of each size's xsafety run to DIR/run-<answers>.prof")
    parser.add_argument("--keep", type=Path, default=None,
                        help="work in this directory and keep it (run dirs, configs) instead of a temporary one")
    args = parser.parse_args()
    if not SHARED.is_file():
        raise SystemExit(f"needs {SHARED} (the shared research data beside the checkout)")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    with tempfile.TemporaryDirectory(prefix="xsafety-pipeline-") as tmp:
        work = Path(tmp) if args.keep is None else args.keep.resolve()
        work.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "XSAFETY_HOME": str(work / "home"), "XSAFETY_PROGRESS": "0",
               "XSAFETY_CACHE": str(work / "cache")}
        t0 = time.time()
        imported = _xsafety(["import", "xsafety", str(SHARED)], env, work)
        if imported.returncode != 0:
            raise SystemExit(f"import failed:\n{imported.stderr[-2000:]}")
        print(f"import of XSafety (2,800 prompts, 9 reference locales): {time.time() - t0:.1f} s")
        stamps = work / "stamps.json"
        rows = []
        for n in sizes:
            # A fresh server per size: its first/last stamps and request count are that run's alone.
            queue: mp.Queue[int] = mp.Queue()
            server = mp.Process(target=_serve, args=(queue, str(stamps)), daemon=True)
            server.start()
            try:
                url = f"http://127.0.0.1:{queue.get(timeout=30)}/v1"
                prof = None
                if args.profile is not None:
                    args.profile.mkdir(parents=True, exist_ok=True)
                    prof = args.profile.resolve() / f"run-{n}.prof"
                rows.append(run_size(n, work, env, url, stamps, prof))
            finally:
                server.terminate()
                server.join()
    print("load averages at the end (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
          + f" ({os.cpu_count()} cores)")
    print(f"{'answers':>8} {'requests':>8} {'total s':>8} {'non-model s':>11} {'gen window s':>12} "
          f"{'ms/request':>10} {'non-model ms/answer':>19} {'xsafety cpu s':>13}")
    for r in rows:
        per_req = 1000 * r["generation_window_s"] / r["requests"] if r["requests"] else 0.0
        print(f"{r['answers']:>8.0f} {r['requests']:>8.0f} {r['total_s']:>8.1f} {r['non_model_s']:>11.1f} "
              f"{r['generation_window_s']:>12.1f} {per_req:>10.2f} {1000 * r['non_model_s'] / r['answers']:>19.2f} {r['cpu_s']:>13.1f}")
    _print_stages(rows)
    if len(rows) > 1:
        small, large = rows[0], rows[-1]
        growth = (large["non_model_s"] / large["answers"]) / (small["non_model_s"] / small["answers"])
        print(f"non-model time per answer, {large['answers']:.0f} vs {small['answers']:.0f}: x{growth:.2f} "
              "(<= 1 is linear or better)")


if __name__ == "__main__":
    main()
