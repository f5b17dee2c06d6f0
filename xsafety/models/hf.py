"""Local transformers backend: batched chat generation on CPU or CUDA, and GGUF conversion.

Why it is shaped this way:

* Batching is most of the speed on CPU (measured: ~6 tok/s one prompt at a time vs ~200 tok/s at
  batch 32 for SmolLM2), so requests are sorted by length and packed into left-padded batches
  under a token budget (prompt + new tokens per row), which keeps padding waste small. Where the
  model's cache allows, ``continuous.py`` runs them: finished rows leave, waiting prompts join,
  and the prompt prefix all requests share (the chat template's header) is computed once.
* Results must not depend on batching. Greedy decoding is batch-invariant up to float noise; for
  sampling, each row draws from its own generator seeded from ``(seed, request id)``, so a request
  gets the same answer alone or in any batch.
* The signature names the weights by content (config + first MB of each weight file, or the hub
  commit), the dtype and the decoding settings; device and batch size cannot change outputs in
  principle and stay out.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from xsafety.data import cache_dir
from xsafety.errors import InputError
from xsafety.models import continuous
from xsafety.models.base import ChatRequest, ChatResult, Decoding, ResultCallback
from xsafety.records import signature, stable_hash, text_hash
from xsafety.torch_runtime import (
    apply_threads,
    causal_lm_cost,
    cpu_sample,
    hub_snapshot,
    pack_batches,
    pick_device,
    pick_dtype,
    run_split_on_oom,
)

log = logging.getLogger(__name__)

# Token budgets per batch (rows x (longest prompt + max new tokens)). On CPU, 64 rows in flight
# gave 13% more tokens per CPU-second than 32 (SmolLM2, fp32, 1 thread: 129 vs 112-115), and up
# to 128 (the token budget may hold fewer) more again: 259.0/259.1 ->
# 309.6/304.0 tok/s on 2 threads and 164.5/167.1 -> 180.6/177.0 on 1 (the 147 built-in prompts,
# 0 answers changed; 294 prompts: 250.0 -> 304.3, peak memory 1.5 -> 2.0 GB), while 256 rows
# under a 65,536 budget gained nothing more (302.9 against 311.6 for 128). A GPU wants hundreds.
CPU_BATCH_TOKENS = 16_384
CUDA_BATCH_TOKENS = 262_144
CPU_MAX_BATCH = 128
CUDA_MAX_BATCH = 256

PLAIN_FORMAT = "plain-user-assistant"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
HEAD_BYTES = 1 << 20

def weights_fingerprint(folder: Path) -> str:
    """Content hash of a model folder: config.json plus the first MB and size of each weight file.

    Reading a megabyte per file is cheap even for large models and tells apart different
    fine-tunes of one architecture, unlike names or mtimes.
    """
    h = hashlib.sha256()
    config = folder / "config.json"
    if config.exists():
        h.update(config.read_bytes())
    for path in sorted(folder.iterdir()):
        if path.suffix in WEIGHT_SUFFIXES and path.is_file():
            h.update(path.name.encode())
            h.update(str(path.stat().st_size).encode())
            with open(path, "rb") as fh:
                h.update(fh.read(HEAD_BYTES))
    return h.hexdigest()[:16]


class HFChatModel:
    """A transformers causal LM answering chat requests in length-sorted, token-budgeted batches."""

    # Set by ``load_gguf``: where the safetensors copy lives and whether this load reused it.
    converted_dir: Path | None = None
    converted_from_cache: bool | None = None

    def __init__(
        self,
        source: str,
        decoding: Decoding | None = None,
        *,
        spec: str | None = None,
        name: str | None = None,
        revision: str | None = None,
        fingerprint: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_tokens: int | None = None,
        max_batch: int | None = None,
        threads: int | str | None = None,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.spec = spec or f"hf:{source}"
        self.decoding = decoding or Decoding()
        self.device = pick_device(device)
        self.torch_dtype = pick_dtype(dtype, self.device)
        on_cuda = self.device.startswith("cuda")
        self.batch_tokens = int(batch_tokens or (CUDA_BATCH_TOKENS if on_cuda else CPU_BATCH_TOKENS))
        self.max_batch = int(max_batch or (CUDA_MAX_BATCH if on_cuda else CPU_MAX_BATCH))
        self.name = name or source
        # CPU use by other processes is measured while the model loads, and the thread count
        # chosen from it afterwards (see torch_runtime.choose_threads).
        before_load = cpu_sample()

        local = Path(source).expanduser()
        load_from = str(local) if local.is_dir() else source
        started = time.perf_counter()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(load_from, revision=revision)
            self.model = AutoModelForCausalLM.from_pretrained(load_from, revision=revision, dtype=self.torch_dtype)
        except OSError as exc:
            raise InputError(f"cannot load model {source!r}: {exc}", field="model") from exc
        self.model.to(self.device)
        self.model.eval()
        self.load_seconds = time.perf_counter() - started
        # GPU kernels need one host thread; on CPU the count decides speed on a shared machine.
        self.threads = apply_threads(threads, before_load) if not on_cuda else None
        # Only now is a hub model surely in the local cache: reading its commit before loading
        # gave a first signature without revision or weights hash, and re-keyed every response
        # on the next load.
        if local.is_dir():
            self.revision = revision
            self.fingerprint = fingerprint or weights_fingerprint(local)
        else:
            commit, snapshot = hub_snapshot(source, revision)
            self.revision = commit or revision
            self.fingerprint = fingerprint or (weights_fingerprint(snapshot) if snapshot else None)

        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.has_template = bool(getattr(self.tokenizer, "chat_template", None))
        if not self.has_template:
            log.warning("%s has no chat template: using a plain 'User: ...\\nAssistant:' format", self.name)
        self.eos_ids = self._eos_ids()
        # Continuous batching (finished rows leave, waiting prompts join) where the model's cache
        # allows it; ``generate`` on padded batches otherwise. ``stats`` accumulates its costs.
        self.continuous = continuous.supports(self.model)
        self.stats = continuous.DecodeStats()
        log.info("loaded %s on %s (%s) in %.1f s", self.name, self.device, self.torch_dtype, self.load_seconds)

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for value in (self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id):
            if value is None:
                continue
            ids.update(value if isinstance(value, (list, tuple)) else [value])
        return ids

    def signature(self) -> str:
        """Model name, revision/weights hash, dtype, prompt format and decoding (not device or batch)."""
        d = self.decoding
        sampling = d.temperature > 0
        return signature(
            "hf",
            model=self.name,
            revision=self.revision,
            weights=self.fingerprint,
            dtype=str(self.torch_dtype).removeprefix("torch."),
            # The template lives in the tokenizer files, outside the weights hash, yet changes prompts.
            template=text_hash(self.tokenizer.chat_template) if self.has_template else PLAIN_FORMAT,
            max_new_tokens=d.max_new_tokens,
            temperature=float(d.temperature),
            top_p=float(d.top_p) if sampling else None,
            # The seed cannot change a greedy answer, so greedy runs share keys across seeds.
            seed=d.seed if sampling else None,
        )

    # -- prompt building -------------------------------------------------------------------

    def render(self, messages: Sequence[dict[str, str]]) -> str:
        """The exact prompt text for a conversation (chat template, or the plain fallback)."""
        if self.has_template:
            return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        lines = []
        for m in messages:
            role = {"system": "System", "assistant": "Assistant"}.get(m["role"], "User")
            lines.append(f"{role}: {m['content']}")
        return "\n".join(lines) + "\nAssistant:"

    def encode(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Token ids of the rendered prompt (the template already holds any special tokens)."""
        text = self.render(messages)
        return list(self.tokenizer(text, add_special_tokens=not self.has_template)["input_ids"])

    def plan_batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices grouped into batches: sorted by length, each under the token budget and row cap."""
        return pack_batches(
            lengths, self.batch_tokens, causal_lm_cost(self.decoding.max_new_tokens), max_rows=self.max_batch
        )

    # -- generation ------------------------------------------------------------------------

    def chat(self, requests: Sequence[ChatRequest], on_result: ResultCallback | None = None) -> list[ChatResult]:
        """Answer every request; results come back in request order, ``on_result`` as each ends."""
        encoded = [self.encode(r.messages) for r in requests]
        results: dict[int, ChatResult] = {}

        def deliver(i: int, result: ChatResult) -> None:
            results[i] = result
            if on_result is not None:
                on_result(result)

        started = time.perf_counter()
        before, prefilled_before, saved_before = self.stats.useful, self.stats.prefill_tokens, self.stats.prefix_saved
        if self.continuous:
            self._chat_continuous(requests, encoded, deliver)
        else:
            for batch in self.plan_batches([len(e) for e in encoded]):
                rows = self._run_batch([requests[i] for i in batch], [encoded[i] for i in batch])
                for i, result in zip(batch, rows):
                    deliver(i, result)
        if self.continuous and requests:
            elapsed = time.perf_counter() - started
            log.info(
                "%s: %d answers, %d tokens in %.1f s (%.1f tok/s); %d decode row-steps, %.1f%% after an answer ended; "
                "%d prompt tokens computed, %d more shared with other prompts and computed once",
                self.name, len(requests), self.stats.useful - before, elapsed,
                (self.stats.useful - before) / elapsed if elapsed else 0.0, self.stats.row_steps, 100 * self.stats.waste,
                self.stats.prefill_tokens - prefilled_before, self.stats.prefix_saved - saved_before,
            )
        return [results[i] for i in range(len(requests))]

    def _chat_continuous(
        self, requests: Sequence[ChatRequest], encoded: list[list[int]], deliver: Callable[[int, ChatResult], None]
    ) -> None:
        """Every request through the continuous-batching loop, shortest prompts first, under the
        OOM split: an out-of-memory error halves the rows in flight and retries what is unfinished."""
        done: set[int] = set()
        rows_cap = [self.max_batch]

        def finish(i: int, result: ChatResult) -> None:
            done.add(i)
            deliver(i, result)

        def step(part: Sequence[int]) -> list[None]:
            todo = [i for i in part if i not in done]
            if todo:
                self._decode(todo, requests, encoded, rows_cap[0], finish)
            return [None] * len(part)

        def too_big(i: int) -> None:
            finish(i, self._error(requests[i], "out of memory on a single request"))

        def halve_rows() -> None:
            rows_cap[0] = max(1, rows_cap[0] // 2)

        order = sorted(range(len(requests)), key=lambda i: len(encoded[i]))
        try:
            run_split_on_oom(order, step, too_big, device=self.device, on_oom=halve_rows)
        except Exception as exc:  # noqa: BLE001 - a failure must still answer every request
            log.exception("generation failed with %d of %d requests unfinished", len(requests) - len(done), len(requests))
            for i in order:
                if i not in done:
                    finish(i, self._error(requests[i], f"{type(exc).__name__}: {exc}"))

    def _decode(
        self,
        todo: list[int],
        requests: Sequence[ChatRequest],
        encoded: list[list[int]],
        max_rows: int,
        finish: Callable[[int, ChatResult], None],
    ) -> None:
        """One run of the continuous loop over ``todo`` (request indices)."""
        d = self.decoding
        joined_at: dict[int, float] = {}
        prompts = [encoded[i] for i in todo]
        choose = self._chooser([requests[i] for i in todo])

        def on_finish(done: continuous.Finished) -> None:
            i = todo[done.index]
            tokens = done.tokens[:-1] if done.stopped else done.tokens
            text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
            finish(
                i,
                ChatResult(
                    id=requests[i].id,
                    text=text,
                    finish_reason="stop" if done.stopped else "length",
                    prompt_tokens=len(encoded[i]),
                    completion_tokens=len(done.tokens),
                    latency_s=time.perf_counter() - joined_at.get(done.index, started),
                ),
            )

        def timed_choose(logits: Any, rows: list[int]) -> Any:
            now = time.perf_counter()
            for r in rows:
                joined_at.setdefault(r, now)
            return choose(logits, rows)

        started = time.perf_counter()
        stats = continuous.generate(
            self.model,
            prompts,
            max_new_tokens=d.max_new_tokens,
            eos_ids=self.eos_ids,
            pad_id=self.tokenizer.pad_token_id,
            max_rows=max_rows,
            token_budget=self.batch_tokens,
            choose=timed_choose,
            on_finish=on_finish,
        )
        self.stats.add(stats)

    def _chooser(self, requests: Sequence[ChatRequest]) -> Callable[[Any, list[int]], Any]:
        """Next-token choice for the loop: argmax, or each request's own seeded draw when sampling."""
        d = self.decoding
        if d.temperature <= 0:
            return lambda logits, rows: logits.argmax(-1)
        import torch

        generators = [torch.Generator().manual_seed(_row_seed(d.seed, r.id)) for r in requests]

        def draw(logits: Any, rows: list[int]) -> Any:
            picked = draw_rows(logits, [generators[r] for r in rows], d.temperature, d.top_p)
            return picked.to(logits.device)

        return draw

    def _run_batch(self, requests: list[ChatRequest], encoded: list[list[int]]) -> list[ChatResult]:
        """One padded batch through ``generate`` and the OOM split (models the loop cannot run)."""
        rows = list(zip(requests, encoded))

        def step(part: Sequence[tuple[ChatRequest, list[int]]]) -> list[ChatResult]:
            return self._generate([r for r, _ in part], [e for _, e in part])

        def too_big(row: tuple[ChatRequest, list[int]]) -> ChatResult:
            return self._error(row[0], "out of memory on a single request")

        try:
            return run_split_on_oom(rows, step, too_big, device=self.device)
        except Exception as exc:  # noqa: BLE001 - one bad batch must not lose the rest of the run
            log.exception("generation failed for a batch of %d", len(requests))
            return [self._error(r, f"{type(exc).__name__}: {exc}") for r in requests]

    def _error(self, request: ChatRequest, message: str) -> ChatResult:
        return ChatResult(id=request.id, text="", error=message)

    def _generate(self, requests: list[ChatRequest], encoded: list[list[int]]) -> list[ChatResult]:
        import torch

        pad = self.tokenizer.pad_token_id
        input_ids, attention = continuous.left_pad(encoded, pad)
        d = self.decoding
        kwargs: dict[str, Any] = {
            "max_new_tokens": d.max_new_tokens,
            "do_sample": False,
            "pad_token_id": pad,
            "eos_token_id": sorted(self.eos_ids) or None,
            # Neutralise sampling knobs a model's generation_config may carry.
            "temperature": None,
            "top_p": None,
            "top_k": None,
        }
        if d.temperature > 0:
            from transformers import LogitsProcessorList

            kwargs["logits_processor"] = LogitsProcessorList(
                [RowSampler([_row_seed(d.seed, r.id) for r in requests], d.temperature, d.top_p)]
            )
        started = time.perf_counter()
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device), **kwargs
            )
        elapsed = time.perf_counter() - started
        share = elapsed / len(requests)
        results = []
        for row, request in enumerate(requests):
            new = output[row, input_ids.shape[1] :].tolist()
            stop_at = next((k for k, t in enumerate(new) if t in self.eos_ids), None)
            if stop_at is None:
                kept, finish, count = new, "length", len(new)
            else:
                kept, finish, count = new[:stop_at], "stop", stop_at + 1
            text = self.tokenizer.decode(kept, skip_special_tokens=True).strip()
            results.append(
                ChatResult(
                    id=request.id,
                    text=text,
                    finish_reason=finish,
                    prompt_tokens=len(encoded[row]),
                    completion_tokens=count,
                    latency_s=share,
                )
            )
        return results

    def close(self) -> None:
        """Drop the weights (and the CUDA cache) so a following model fits."""
        import gc

        import torch

        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _row_seed(seed: int, request_id: str) -> int:
    return int(stable_hash("sample", seed, request_id, length=15), 16)


class RowSampler:
    """A logits processor that samples each row from its own seeded generator.

    It returns logits that are ``-inf`` except at the drawn token, so greedy search then picks
    exactly that token: the draw depends only on the row's seed and its history, never on which
    other rows share the batch.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float) -> None:
        import torch

        self.temperature = temperature
        self.top_p = top_p
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        """Replace each row's scores by a one-hot choice drawn with that row's generator."""
        import torch

        choice = draw_rows(scores, self.generators, self.temperature, self.top_p)
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(scores.shape[0], device=scores.device), choice.to(scores.device)] = 0.0
        return out


def draw_rows(scores: Any, generators: Sequence[Any], temperature: float, top_p: float) -> Any:
    """One token id per row, drawn from softmax(scores / temperature) cut to the top-p nucleus,
    with row ``k``'s own generator: a row's draw never depends on the other rows."""
    import torch

    probs = torch.softmax(scores.float().cpu() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, idx = torch.sort(probs, descending=True, dim=-1)
        cumulative = torch.cumsum(sorted_p, dim=-1)
        drop = cumulative - sorted_p > top_p
        sorted_p[drop] = 0.0
        probs = torch.zeros_like(probs).scatter(-1, idx, sorted_p)
    picks = [torch.multinomial(probs[row], 1, generator=gen) for row, gen in enumerate(generators)]
    return torch.cat(picks)


# -- GGUF ------------------------------------------------------------------------------------


def file_hash(path: Path) -> str:
    """SHA-256 of a (possibly large) file, remembered by path, size and mtime in the cache."""
    stat = path.stat()
    memo_path = cache_dir() / "models" / "file-hashes.json"
    memo_key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    if memo_key in memo:
        return memo[memo_key]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    digest = h.hexdigest()[:16]
    memo[memo_key] = digest
    memo_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo_path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(memo, indent=0))
    os.replace(tmp, memo_path)
    return digest


def converted_dir(gguf: Path) -> Path:
    """Where the safetensors copy of a GGUF file lives: ``cache_dir()/models/<name>-<hash>``."""
    return cache_dir() / "models" / f"{gguf.stem}-{file_hash(gguf)}"


def convert_gguf(gguf: Path) -> tuple[Path, bool]:
    """A transformers folder for ``gguf``, converted on first use; returns (folder, was_cached).

    Dequantising a GGUF takes seconds on every load, and ``save_pretrained`` refuses the
    GGUF-loaded model ("not serializable"); a model rebuilt from the config without the
    quantization settings takes the state dict and saves fine, and that copy loads in well
    under a second. Conversion writes to a temp folder renamed into place, so a kill midway
    leaves no half-written model behind.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf.expanduser().resolve()
    if not gguf.is_file():
        raise InputError(f"GGUF file not found: {gguf}", field="model")
    target = converted_dir(gguf)
    if (target / "config.json").exists():
        return target, True
    log.info("converting %s to safetensors once (%s)", gguf.name, target)
    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        clean.load_state_dict(loaded.state_dict())
        clean.generation_config = loaded.generation_config
        clean.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "xsafety-source.json").write_text(json.dumps({"gguf": str(gguf), "sha256_16": target.name[-16:]}))
        del loaded, clean
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished the same conversion first; theirs is as good as ours.
            if not (target / "config.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted %s in %.1f s", gguf.name, time.perf_counter() - started)
    return target, False


def load_gguf(
    path: str | Path, decoding: Decoding | None = None, *, spec: str | None = None, name: str | None = None,
    **options: Any,
) -> HFChatModel:
    """An ``HFChatModel`` for a GGUF file, through its cached safetensors conversion."""
    gguf = Path(path).expanduser()
    folder, cached = convert_gguf(gguf)
    model = HFChatModel(
        str(folder),
        decoding,
        spec=spec or f"gguf:{path}",
        name=name or f"gguf:{gguf.name}",
        # Name the weights by the GGUF file's content hash: the conversion is deterministic.
        fingerprint=folder.name.rsplit("-", 1)[-1],
        **options,
    )
    model.converted_from_cache = cached
    model.converted_dir = folder
    return model
