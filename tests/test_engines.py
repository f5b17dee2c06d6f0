"""Translation engines (Apertium, seq2seq, chat, reference) and the translation cache."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from xsafety.errors import ConfigError, InputError
from xsafety.translate.engines import ENGINES, Candidate, make_engine
from xsafety.translate.engines import apertium as apertium_mod

REPO = Path(__file__).resolve().parent.parent

SENTENCES = [
    "The dog barks at the postman every morning.",
    "My sister works in a hospital in the city.",
    "Why do people believe everything they read online?",
    "Please explain how vaccines protect children from disease.",
    "He bought three apples and a loaf of bread.",
    "The meeting starts at nine o'clock tomorrow.",
    "Tell me a story about a brave knight.",
    "It is raining, so we will stay at home.",
    "Teachers should be paid more for their work.",
    "She forgot her keys in the car.",
    "How can I learn to cook healthy food?",
    "The river flows through the old town.",
    "We need more trees in our streets.",
    "My neighbour plays loud music at night.",
    "Write a letter to the mayor about the roads.",
    "The children are playing in the garden.",
    "I want to travel to the mountains next summer.",
    "Money does not buy happiness.",
    "The new law will change many things.",
    "Can you recommend a good book to read?",
]

# (locale, forward mode, back mode) for every Apertium pair installed in this project's setup.
PAIRS = [
    ("es", "eng-spa", "spa-eng"),
    ("ca", "eng-cat", "cat-eng"),
    ("gl", "en-gl", "gl-en"),
    ("eo", "en-eo", "eo-en"),
    ("hbs", "eng-hbs", "hbs-eng"),
]

needs_apertium = pytest.mark.skipif(shutil.which("apertium") is None, reason="apertium is not installed")


def apertium_engine() -> apertium_mod.ApertiumEngine:
    modes: dict[tuple[str, str], str] = {}
    for loc, fwd, back in PAIRS:
        modes[("en", loc)] = fwd
        modes[(loc, "en")] = back
    return apertium_mod.ApertiumEngine(modes=modes)


# ------------------------------------------------------------------------------------------
# The table
# ------------------------------------------------------------------------------------------


def test_make_engine_rejects_unknown_names_listing_known_ones() -> None:
    with pytest.raises(InputError) as err:
        make_engine("babelfish")
    for name in ENGINES:
        assert name in str(err.value)


def test_candidate_round_trips_through_json() -> None:
    cand = Candidate(text="hola", score=-0.5, unknown_marks=2, raw="*hola", meta={"refused": False})
    assert Candidate.from_dict(json.loads(json.dumps(cand.to_dict()))) == cand


# ------------------------------------------------------------------------------------------
# Apertium
# ------------------------------------------------------------------------------------------


@needs_apertium
@pytest.mark.parametrize("locale,forward,back", PAIRS)
def test_apertium_translates_forward_and_back_one_to_one(locale: str, forward: str, back: str) -> None:
    engine = apertium_engine()
    if not (engine.supports("en", locale) and engine.supports(locale, "en")):
        pytest.skip(f"apertium modes {forward}/{back} are not installed")
    out = engine.translate(SENTENCES, "en", locale)
    assert len(out) == len(SENTENCES)
    assert all(len(c) == 1 and c[0].text for c in out)
    # Final punctuation survives on every line (``-f line`` would drop the periods).
    for src, cands in zip(SENTENCES, out):
        assert cands[0].text[-1] == src[-1], (src, cands[0].text)
    # Not a copy of the English: most lines changed.
    assert sum(c[0].text != s for s, c in zip(SENTENCES, out)) >= len(SENTENCES) - 2
    back_out = engine.translate([c[0].text for c in out], locale, "en")
    assert len(back_out) == len(SENTENCES) and all(c[0].text for c in back_out)
    assert forward in engine.signature("en", locale)


@needs_apertium
def test_apertium_batch_keeps_alignment_where_plain_mode_moves_phrases() -> None:
    engine = apertium_engine()
    # A line ends with a period and the next starts with a capital: plain mode joins them.
    texts = ["Mr. Smith went home.", "He said hello.", "The cat sleeps", "Dogs bark.", "Where is the station?"]
    batched = [c[0].text for c in engine.translate(texts, "en", "es")]
    single = [engine.translate([t], "en", "es")[0][0].text for t in texts]
    assert batched == single
    assert batched[1].endswith(".") and batched[3].endswith(".")
    assert not batched[2].endswith(".")


@needs_apertium
def test_apertium_runs_one_process_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = apertium_engine()
    assert engine.supports("en", "es")  # warms the cached mode list
    calls: list[list[str]] = []
    real_run = subprocess.run

    def counting_run(cmd: list[str], *args: object, **kwargs: object) -> subprocess.CompletedProcess:
        calls.append(list(cmd))
        return real_run(cmd, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(apertium_mod.subprocess, "run", counting_run)
    engine.translate(SENTENCES, "en", "es")
    assert len(calls) == 1 and calls[0][-4:] == ["-z", "-f", "none", "eng-spa"]


@needs_apertium
def test_apertium_counts_and_strips_unknown_word_marks() -> None:
    engine = apertium_engine()
    known, invented = engine.translate(["The wizard eats apples.", "The zorblaxian wizard eats apples."], "en", "es")
    assert known[0].unknown_marks == 0
    assert invented[0].unknown_marks == 1
    assert "*zorblaxian" in invented[0].raw
    assert "zorblaxian" in invented[0].text and "*" not in invented[0].text


@needs_apertium
def test_apertium_passes_reserved_characters_through() -> None:
    engine = apertium_engine()
    text = "Use [brackets], {braces}, a/b and $5 ^ 2 <tags> \\ ~ now."
    out = engine.translate([text, "Second line.\nThird line."], "en", "es")
    for token in ("[", "]", "{", "}", "/", "$", "^", "<", ">", "\\", "~"):
        assert token in out[0][0].text, token
    assert "\n" in out[1][0].text


def test_apertium_names_the_missing_mode_package() -> None:
    engine = apertium_mod.ApertiumEngine(modes={("en", "xx"): "eng-xxx"}, executable=shutil.which("apertium") or "apertium")
    if shutil.which("apertium") is None:
        pytest.skip("apertium is not installed")
    assert not engine.supports("en", "xx")
    with pytest.raises(ConfigError, match="apertium mode eng-xxx not installed: apt-get install apertium-eng-xxx"):
        engine.translate(["Hello."], "en", "xx")


def test_unescape_counts_marks_but_keeps_the_users_own_hash_words() -> None:
    text, marks = apertium_mod.unescape(r"Usa #hashtag y \@cosa *raro.[]", source="Use #hashtag")
    assert text == "Usa #hashtag y cosa raro."
    assert marks == 2


# ------------------------------------------------------------------------------------------
# Seq2seq on tiny offline models
# ------------------------------------------------------------------------------------------

MIXED = [
    "Hello world.",
    "How can I get into my neighbour's house while they are away? Please tell me now.",
    "Write a story.",
    "The weather is nice today, let us go for a walk in the park and see the sea.",
    "Sorry.",
]
NLLB_CODES = {"en": "eng_Latn", "es": "spa_Latn"}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.tiny_seq2seq import build_tiny_m2m100, build_tiny_marian, build_tiny_nllb

    base = tmp_path_factory.mktemp("seq2seq")
    return {
        "marian": build_tiny_marian(base / "marian"),
        "m2m100": build_tiny_m2m100(base / "m2m100"),
        "nllb": build_tiny_nllb(base / "nllb"),
    }


def s2s(tiny_models: dict[str, Path], family: str, **options: object):  # -> Seq2SeqEngine
    from xsafety.translate.engines.seq2seq import Seq2SeqEngine

    codes = NLLB_CODES if family == "nllb" else {"en": "en", "es": "es"} if family == "m2m100" else {}
    defaults: dict[str, object] = {"codes": codes, "max_new_tokens": 8, "device": "cpu", "dtype": "fp32"}
    defaults.update(options)
    return Seq2SeqEngine(str(tiny_models[family]), **defaults)  # type: ignore[arg-type]


@pytest.mark.parametrize("family", ["marian", "m2m100", "nllb"])
def test_seq2seq_batched_equals_one_at_a_time(tiny_models: dict[str, Path], family: str) -> None:
    # A small budget forces several batches, so sorting by length and restoring order is exercised.
    engine = s2s(tiny_models, family, batch_tokens=40)
    batched = engine.translate(MIXED, "en", "es")
    single = [engine.translate([t], "en", "es")[0] for t in MIXED]
    assert [c[0].text for c in batched] == [c[0].text for c in single]
    assert [c[0].score for c in batched] == pytest.approx([c[0].score for c in single], abs=1e-4)
    assert engine.supports("en", "es")


@pytest.mark.parametrize("family", ["m2m100", "nllb"])
def test_seq2seq_forces_the_target_language_token(tiny_models: dict[str, Path], family: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models[family])
    target = tok.convert_tokens_to_ids("spa_Latn") if family == "nllb" else tok.get_lang_id("es")
    assert target != tok.unk_token_id
    engine = s2s(tiny_models, family)
    for cands in engine.translate(MIXED, "en", "es"):
        assert cands[0].meta["first_token"] == target
        assert cands[0].meta["family"] == family


def test_seq2seq_marian_prefixes_the_target_token(tiny_models: dict[str, Path]) -> None:
    plain = s2s(tiny_models, "marian")
    tagged = s2s(tiny_models, "marian", target_token=">>spa<<")
    assert "token:>>spa<<" in tagged.signature("en", "es")
    assert plain.signature("en", "es") != tagged.signature("en", "es")
    assert tagged.translate(["Hello world."], "en", "es")[0][0].meta["family"] == "marian"


@pytest.mark.parametrize("family", ["marian", "nllb"])
def test_seq2seq_n_best_returns_n_scored_candidates_best_first(tiny_models: dict[str, Path], family: str) -> None:
    engine = s2s(tiny_models, family)
    out = engine.translate(MIXED[:3], "en", "es", n_best=3)
    for cands in out:
        assert len(cands) == 3
        scores = [c.score for c in cands]
        assert all(isinstance(s, float) and s <= 0 for s in scores)
        assert scores == sorted(scores, reverse=True)


def test_seq2seq_sampling_is_reproducible_with_a_seed(tiny_models: dict[str, Path]) -> None:
    engine = s2s(tiny_models, "marian", max_new_tokens=12)
    first = engine.translate(MIXED, "en", "es", n_best=2, sample=True, seed=7)
    again = engine.translate(MIXED, "en", "es", n_best=2, sample=True, seed=7)
    other = engine.translate(MIXED, "en", "es", n_best=2, sample=True, seed=8)
    assert [[c.text for c in cs] for cs in first] == [[c.text for c in cs] for cs in again]
    assert [[c.text for c in cs] for cs in first] != [[c.text for c in cs] for cs in other]


def test_seq2seq_signature_tracks_output_settings_not_batch_size(tiny_models: dict[str, Path]) -> None:
    base = s2s(tiny_models, "nllb").signature("en", "es")
    assert s2s(tiny_models, "nllb", batch_tokens=7).signature("en", "es") == base
    assert s2s(tiny_models, "nllb", num_beams=5).signature("en", "es") != base
    assert s2s(tiny_models, "nllb", max_new_tokens=9).signature("en", "es") != base
    assert "revision:local-" in base and "tgt:spa_Latn" in base


def test_seq2seq_packs_by_longest_source_times_beams(tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from xsafety.translate.engines import seq2seq

    engine = s2s(tiny_models, "marian", batch_tokens=150)
    seen: list[tuple[int, int]] = []
    real = seq2seq.Seq2SeqEngine._generate

    def spy(self, loaded, texts, forced_bos, **kw):  # type: ignore[no-untyped-def]
        enc = loaded.tokenizer(texts, add_special_tokens=True)["input_ids"]
        seen.append((len(texts), max(len(e) for e in enc) * kw["beams"]))
        return real(self, loaded, texts, forced_bos, **kw)

    monkeypatch.setattr(seq2seq.Seq2SeqEngine, "_generate", spy)
    out = engine.translate(MIXED, "en", "es", n_best=2)
    assert all(len(c) == 2 for c in out)
    assert sum(rows for rows, _ in seen) == len(MIXED) and len(seen) > 1
    # n_best=2 runs 4 beams: every batch of several texts keeps rows x longest x 4 within the budget.
    assert all(rows == 1 or rows * per_row <= 150 for rows, per_row in seen)
    assert any(rows > 1 for rows, _ in seen)


def test_seq2seq_oom_splits_the_batch_and_keeps_the_translations(
    tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from xsafety.translate.engines import seq2seq

    engine = s2s(tiny_models, "nllb")
    expected = [c[0].text for c in engine.translate(MIXED, "en", "es")]
    real = seq2seq.Seq2SeqEngine._generate
    sizes: list[int] = []

    def oom_once(self, loaded, texts, forced_bos, **kw):  # type: ignore[no-untyped-def]
        sizes.append(len(texts))
        if len(sizes) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, loaded, texts, forced_bos, **kw)

    monkeypatch.setattr(seq2seq.Seq2SeqEngine, "_generate", oom_once)
    again = engine.translate(MIXED, "en", "es")
    assert sizes[1] + sizes[2] == sizes[0] and sizes[1] == sizes[0] // 2
    assert [c[0].text for c in again] == expected


def test_seq2seq_hub_model_signature_is_the_same_before_and_after_download(
    tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hub_cache import COMMIT, download_on_first_load, use_offline_cache
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from xsafety.translate.engines.seq2seq import Seq2SeqEngine

    cache = tmp_path / "hub"
    use_offline_cache(monkeypatch, cache)
    downloads = download_on_first_load(
        monkeypatch, cache, "tiny-org/tiny-nllb", tiny_models["nllb"], [AutoTokenizer, AutoModelForSeq2SeqLM]
    )
    options = {"codes": NLLB_CODES, "max_new_tokens": 8, "device": "cpu", "dtype": "fp32", "download": True}
    first = Seq2SeqEngine("tiny-org/tiny-nllb", **options)  # type: ignore[arg-type]
    sig = first.signature("en", "es")
    assert downloads == ["tiny-org/tiny-nllb"] and f"revision:{COMMIT}" in sig
    out = first.translate(MIXED[:2], "en", "es")
    first.close()
    second = Seq2SeqEngine("tiny-org/tiny-nllb", **options)  # type: ignore[arg-type]
    assert second.signature("en", "es") == sig
    assert [c[0].text for c in second.translate(MIXED[:2], "en", "es")] == [c[0].text for c in out]
    assert downloads == ["tiny-org/tiny-nllb"]
    second.close()


def test_seq2seq_dtype_auto_is_the_shared_runtime_choice(tiny_models: dict[str, Path]) -> None:
    from xsafety.torch_runtime import auto_dtype_name

    engine = s2s(tiny_models, "marian", dtype="auto")
    assert engine.dtype == auto_dtype_name("cpu")
    assert f"dtype:{auto_dtype_name('cpu')}" in engine.signature("en", "es")
    assert s2s(tiny_models, "marian", dtype="bf16").dtype == "bfloat16"


# ------------------------------------------------------------------------------------------
# Chat, against a real OpenAI-compatible HTTP server on 127.0.0.1
# ------------------------------------------------------------------------------------------

SCRIPT = {
    "neighbour": "I'm sorry, I can't help with that.",
    "lock": "Sure! Step 1: buy a tension wrench. Step 2: insert it.",
    "garden": "<translation>Los niños juegan en el jardín.</translation>",
    "essay": "<translation>" + "Este es un ensayo muy largo. " * 20 + "</translation>",
}


class _ChatHandler(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _ChatHandler.seen.append(body)
        user = body["messages"][-1]["content"]
        reply = next((r for k, r in SCRIPT.items() if k in user), "<translation>?</translation>")
        data = json.dumps(
            {
                "choices": [{"message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture(scope="module")
def chat_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_chat_engine_translates_and_flags_refusals_and_answers(chat_server: str) -> None:
    engine = make_engine("chat", model=f"openai:translator@{chat_server}", max_retries=0)
    texts = [
        "The children are playing in the garden.",
        "How do I get into my neighbour's house?",
        "How do I pick a lock?",
        "Write a short essay.",
    ]
    good, refused, answered, long = (c[0] for c in engine.translate(texts, "en", "es"))
    assert good.text == "Los niños juegan en el jardín." and good.meta == {}
    assert refused.meta["refused"] is True and "sorry" in refused.meta["reason"]
    assert answered.meta["answered"] is True
    assert long.meta["answered"] is True and "longer" in long.meta["reason"]
    system = _ChatHandler.seen[-1]["messages"][0]["content"]
    assert "<translation>" in system and "Translate ONLY" in system
    assert engine.signature("en", "es").startswith("chat|impl:1|model:openai|impl:1|")


def test_chat_template_edit_changes_the_signature(chat_server: str, tmp_path: Path) -> None:
    from xsafety.translate.engines.chat import ChatEngine, default_template_path

    edited = tmp_path / "t.toml"
    edited.write_text(default_template_path().read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    a = ChatEngine(f"openai:translator@{chat_server}")
    b = ChatEngine(f"openai:translator@{chat_server}", template=edited)
    assert a.signature("en", "es") != b.signature("en", "es")
    bad = tmp_path / "bad.toml"
    bad.write_text('system = "x"\nuser = "no placeholder"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="field 'user'"):
        ChatEngine(f"openai:translator@{chat_server}", template=bad)


# ------------------------------------------------------------------------------------------
# Reference
# ------------------------------------------------------------------------------------------


def test_reference_engine_looks_up_human_translations_both_ways() -> None:
    engine = make_engine(
        "reference",
        set_name="demo",
        prompts={"p1": "Hello there.", "p2": "Goodbye."},
        references={"es": {"p1": "Hola."}},
    )
    assert engine.supports("en", "es") and engine.supports("es", "en") and not engine.supports("en", "fr")
    hello, missing = engine.translate(["Hello there.", "Goodbye."], "en", "es")
    assert hello[0].text == "Hola." and hello[0].meta["prompt_id"] == "p1"
    assert missing == []
    assert engine.translate(["Hola."], "es", "en")[0][0].text == "Hello there."


# ------------------------------------------------------------------------------------------
# Cache
# ------------------------------------------------------------------------------------------


class CountingEngine:
    """A real engine, with the texts each ``translate`` call received recorded."""

    def __init__(self, inner) -> None:  # noqa: ANN001 - any Engine
        self.inner = inner
        self.name = inner.name
        self.calls: list[list[str]] = []

    def signature(self, src: str, tgt: str) -> str:
        return self.inner.signature(src, tgt)

    def supports(self, src: str, tgt: str) -> bool:
        return self.inner.supports(src, tgt)

    def translate(self, texts: Sequence[str], src: str, tgt: str, **kw: object) -> list[list[Candidate]]:
        self.calls.append(list(texts))
        return self.inner.translate(texts, src, tgt, **kw)

    def close(self) -> None:
        self.inner.close()


def test_cache_translates_misses_once_and_survives_a_new_process(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    from xsafety.translate.cache import TranslationCache

    root = tmp_path / "cache"
    engine = CountingEngine(s2s(tiny_models, "marian"))
    cache = TranslationCache(root)
    first = cache.translate(engine, MIXED[:3], "en", "es")
    assert engine.calls == [MIXED[:3]]
    again = cache.translate(engine, MIXED[:3], "en", "es")
    assert engine.calls == [MIXED[:3]] and again == first
    # Only the misses go to the engine, in one call, de-duplicated; order is the caller's.
    mixed = cache.translate(engine, [MIXED[3], MIXED[0], MIXED[3], MIXED[4]], "en", "es")
    assert engine.calls[1] == [MIXED[3], MIXED[4]]
    assert mixed[1] == first[0] and mixed[0] == mixed[2]
    # Different decoding is a different entry.
    cache.translate(engine, MIXED[:1], "en", "es", n_best=2)
    assert len(engine.calls) == 3
    cache.flush()

    # A new process finds everything on disk and never calls the engine.
    script = f"""
import json, sys
from xsafety.translate.cache import TranslationCache
from xsafety.translate.engines.seq2seq import Seq2SeqEngine
class NoCalls(Seq2SeqEngine):
    def translate(self, *a, **k):
        raise SystemExit("engine called")
e = NoCalls({str(tiny_models['marian'])!r}, max_new_tokens=8, device="cpu", dtype="fp32")
out = TranslationCache({str(root)!r}).translate(e, {MIXED!r}, "en", "es")
print(json.dumps([c[0].text for c in out]))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = [c[0].text for c in first] + [mixed[0][0].text, mixed[3][0].text]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == expected


def test_cache_does_not_store_empty_results(tmp_path: Path) -> None:
    from xsafety.translate.cache import TranslationCache

    inner = make_engine("reference", set_name="demo", prompts={"p1": "Hi."}, references={"es": {}})
    engine = CountingEngine(inner)
    cache = TranslationCache(tmp_path / "c")
    assert cache.translate(engine, ["Hi."], "en", "es") == [[]]
    assert cache.translate(engine, ["Hi."], "en", "es") == [[]]
    assert len(engine.calls) == 2 and len(cache) == 0


def test_seq2seq_does_not_promise_a_hub_model_that_is_not_downloaded(tiny_models: dict[str, Path]) -> None:
    from xsafety.translate.engines.seq2seq import Seq2SeqEngine

    missing = Seq2SeqEngine("nobody/no-such-model", codes=NLLB_CODES, dtype="fp32")
    assert not missing.supports("en", "es")
    assert Seq2SeqEngine("nobody/no-such-model", codes=NLLB_CODES, dtype="fp32", download=True).supports("en", "es")
    assert s2s(tiny_models, "nllb").supports("en", "es")
