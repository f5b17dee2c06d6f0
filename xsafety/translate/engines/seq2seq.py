"""Any transformers encoder-decoder translation model: Marian/opus-mt, NLLB-200, M2M100.

The family is read off the loaded model: ``model_type == "marian"`` is Marian (one model per
pair; multilingual ``en-mul`` models take a ``>>xxx<<`` target token in front of the source);
``m2m_100`` is NLLB when its tokenizer knows FLORES codes (``eng_Latn``), else M2M100. Both of
those set the tokenizer's ``src_lang`` and force the target language token as the first generated
token. Anything else is used as a plain seq2seq model with no language tokens.

Speed comes from batching: texts are sorted by length and packed under a token budget
(``batch_tokens``, counted as longest source x beams), then put back in input order; device,
dtype, threads, packing and the out-of-memory split come from the shared ``xsafety.torch_runtime``
(the same as the chat backend's). Loaded models are shared per (model, device, dtype) within the
process.

``Candidate.score`` is the mean per-token log-probability of the generated sequence (what beam
search ranks by with ``length_penalty=1``), computed the same way for greedy, beam and sampled
output so candidates are comparable.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xsafety.errors import ConfigError, XSafetyError
from xsafety.records import signature, stable_hash
from xsafety.torch_runtime import (
    apply_threads,
    cpu_sample,
    dtype_name,
    hub_snapshot,
    pack_batches,
    pick_device,
    run_split_on_oom,
    seq2seq_cost,
)
from xsafety.translate.engines.base import Candidate

log = logging.getLogger(__name__)

NLLB_DEFAULT = "facebook/nllb-200-distilled-600M"
DEFAULT_MAX_NEW_TOKENS = 256
DEFAULT_BATCH_TOKENS = 4096
DEFAULT_N_BEST_BEAMS = 4


@dataclass
class _Loaded:
    tokenizer: Any
    model: Any
    family: str  # "marian" | "nllb" | "m2m100" | "seq2seq"
    device: str


# (model id or path, revision, device, dtype) -> loaded model; shared by every engine in the process.
_LOADED: dict[tuple[str, str | None, str, str], _Loaded] = {}


@dataclass(frozen=True)
class _Route:
    """How one pair is translated: which model and which language codes/tokens."""

    model: str
    src_code: str | None
    tgt_code: str | None
    target_token: str | None


def model_revision(model: str, revision: str | None = None) -> str:
    """A revision that changes when the weights do, without loading the model.

    A local folder: a hash of its config text and its files' names and sizes. A hub id: the
    commit the hub cache holds for ``revision`` (a branch or tag resolves through its ref; the
    one ``from_pretrained`` would load offline), ``revision`` itself when it is not cached, and
    ``unknown`` for a hub model not downloaded yet.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        if revision:
            return revision
        files = sorted((p.relative_to(path).as_posix(), p.stat().st_size) for p in path.rglob("*") if p.is_file())
        config = (path / "config.json").read_text(encoding="utf-8") if (path / "config.json").exists() else ""
        return "local-" + stable_hash(config, files, length=12)
    commit, _ = hub_snapshot(model, revision)
    return commit or revision or "unknown"


def _family(model: Any, tokenizer: Any) -> str:
    model_type = getattr(model.config, "model_type", "")
    if model_type == "marian":
        return "marian"
    if model_type == "m2m_100":
        unk = tokenizer.unk_token_id
        try:
            flores = tokenizer.convert_tokens_to_ids("eng_Latn")
        except (KeyError, ValueError):
            flores = unk
        return "nllb" if flores is not None and flores != unk else "m2m100"
    return "seq2seq"


def load(model: str, *, revision: str | None, device: str, dtype: str, threads: int | str | None = None) -> _Loaded:
    """Load (once per process) a tokenizer and model through the Auto classes; on CPU, set torch's
    thread count (``torch_runtime.apply_threads``)."""
    key = (model, revision, device, dtype)
    if key in _LOADED:
        return _LOADED[key]
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    log.info("loading translation model %s (%s, %s)", model, device, dtype)
    before_load = cpu_sample()  # other processes' CPU use is measured while the model loads
    try:
        tokenizer = AutoTokenizer.from_pretrained(model, revision=revision)
        net = AutoModelForSeq2SeqLM.from_pretrained(model, revision=revision, dtype=getattr(torch, dtype))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load translation model {model!r}: {exc}", field="model") from exc
    net.to(device).eval()
    if not device.startswith("cuda"):
        apply_threads(threads, before_load)
    loaded = _Loaded(tokenizer=tokenizer, model=net, family=_family(net, tokenizer), device=device)
    _LOADED[key] = loaded
    return loaded


def _locale_route(src: str, tgt: str) -> _Route | None:
    """The registry's model for ``src -> tgt``: NLLB when both sides have FLORES codes, else opus-mt."""
    from xsafety.locales import ENGLISH, get_locale

    try:
        s, t = get_locale(src), get_locale(tgt)
    except XSafetyError:
        return None
    if s.nllb and t.nllb:
        return _Route(NLLB_DEFAULT, s.nllb, t.nllb, None)
    if src == ENGLISH and t.opus_mt:
        return _Route(t.opus_mt, None, None, getattr(t, "opus_mt_token", None))
    if tgt == ENGLISH and s.opus_mt_back:
        return _Route(s.opus_mt_back, None, None, None)
    return None


def _locale_code(code: str, family: str) -> str | None:
    """A locale's language code for an NLLB or M2M100 model, from the registry."""
    from xsafety.locales import get_locale

    try:
        loc = get_locale(code)
    except XSafetyError:
        return None
    return loc.nllb if family == "nllb" else loc.m2m100


class Seq2SeqEngine:
    """Translate with a transformers seq2seq model.

    Options: ``model`` (hub id or local path; default per pair from the locale registry),
    ``codes`` (locale -> the model's language code, overriding the registry: ``{"es": "spa_Latn"}``),
    ``target_token`` (Marian ``>>xxx<<``), ``revision``, ``device`` (``auto``), ``dtype``
    (``auto``: the shared torch runtime's choice, bf16 on CUDA cards and CPUs that support it,
    fp16 on older cards, fp32 elsewhere), ``num_beams`` (default greedy, or 4 when ``n_best > 1``),
    ``max_new_tokens``, ``batch_tokens`` (padded source tokens per batch, times the beams),
    ``threads`` (torch CPU threads; default from the free cores, or ``XSAFETY_TORCH_THREADS``),
    ``download`` (let ``supports`` accept hub models that are not in the local cache yet).
    """

    name = "seq2seq"

    def __init__(
        self,
        model: str | None = None,
        *,
        codes: Mapping[str, str] | None = None,
        target_token: str | None = None,
        revision: str | None = None,
        device: str = "auto",
        dtype: str | None = "auto",
        num_beams: int | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        threads: int | str | None = None,
        download: bool = False,
    ) -> None:
        self.model = model
        self.codes = dict(codes or {})
        self.target_token = target_token
        self.revision = revision
        self.device_option = device
        self.dtype_option = dtype
        self.num_beams = num_beams
        self.max_new_tokens = int(max_new_tokens)
        self.batch_tokens = int(batch_tokens)
        self.threads = threads
        self.download = download
        self._device: str | None = None
        self._keys: set[tuple[str, str | None, str, str]] = set()

    # -- routing ---------------------------------------------------------------------------
    @property
    def device(self) -> str:
        """The resolved device (``auto`` becomes ``cuda`` or ``cpu`` on first use)."""
        if self._device is None:
            self._device = pick_device(self.device_option)
        return self._device

    @property
    def dtype(self) -> str:
        """The resolved torch dtype name (``float32``, ``bfloat16``, ``float16``)."""
        return dtype_name(self.dtype_option, self.device)

    def _route(self, src: str, tgt: str) -> _Route:
        if self.model:
            return _Route(self.model, self.codes.get(src), self.codes.get(tgt), self.target_token)
        route = _locale_route(src, tgt)
        if route is None:
            raise ConfigError(
                f"no seq2seq model for {src} -> {tgt}: give model= or set nllb/opus_mt in locales.toml",
                field="model",
            )
        return _Route(
            route.model,
            self.codes.get(src, route.src_code),
            self.codes.get(tgt, route.tgt_code),
            self.target_token or route.target_token,
        )

    def _load(self, route: _Route) -> _Loaded:
        loaded = load(route.model, revision=self.revision, device=self.device, dtype=self.dtype, threads=self.threads)
        self._keys.add((route.model, self.revision, self.device, self.dtype))
        return loaded

    def _codes(self, route: _Route, loaded: _Loaded, src: str, tgt: str) -> tuple[str | None, str | None]:
        if loaded.family not in ("nllb", "m2m100"):
            return None, None
        src_code = route.src_code or _locale_code(src, loaded.family)
        tgt_code = route.tgt_code or _locale_code(tgt, loaded.family)
        if loaded.family == "m2m100":
            # M2M100's codes are mostly the ISO 639-1 codes the locales use.
            known = getattr(loaded.tokenizer, "lang_code_to_id", {})
            src_code = src_code or (src if src in known else None)
            tgt_code = tgt_code or (tgt if tgt in known else None)
        if not src_code or not tgt_code:
            raise ConfigError(
                f"{route.model} ({loaded.family}) needs language codes for {src} and {tgt}: "
                f"set {'nllb' if loaded.family == 'nllb' else 'm2m100'} in locales.toml or pass codes=",
                field="codes",
            )
        return src_code, tgt_code

    def supports(self, src: str, tgt: str) -> bool:
        """True when a model is known for the pair and present locally (a folder or the hub cache;
        ``download=True`` accepts hub models not yet downloaded), with both language codes where
        the family needs them. Callers use this to fall back to another engine, so it must not
        promise a model that cannot load offline."""
        try:
            route = self._route(src, tgt)
            if not self.download and model_revision(route.model, self.revision) == "unknown":
                return False
            if route.src_code and route.tgt_code:
                return True
            loaded = self._load(route)
            self._codes(route, loaded, src, tgt)
        except XSafetyError:
            return False
        return True

    def signature(self, src: str, tgt: str) -> str:
        """Model id or path, its revision, dtype, language codes and decoding settings.

        A hub model that is not in the local cache yet is loaded (downloaded) first: a signature
        without its commit would differ from every later one and re-key its translations.
        """
        route = self._route(src, tgt)
        revision = model_revision(route.model, self.revision)
        if revision == "unknown":
            try:
                self._load(route)
            except XSafetyError:
                pass  # translate() will report the load error; the signature still names the model
            revision = model_revision(route.model, self.revision)
        return signature(
            "seq2seq",
            model=route.model,
            revision=revision,
            dtype=self.dtype,
            src=route.src_code,
            tgt=route.tgt_code,
            token=route.target_token,
            beams=self.num_beams,
            max_new=self.max_new_tokens,
        )

    # -- translation -----------------------------------------------------------------------
    def translate(
        self,
        texts: Sequence[str],
        src: str,
        tgt: str,
        *,
        n_best: int = 1,
        sample: bool = False,
        seed: int = 0,
    ) -> list[list[Candidate]]:
        """``n_best`` candidates per text, best first, in input order."""
        if not texts:
            return []
        route = self._route(src, tgt)
        loaded = self._load(route)
        src_code, tgt_code = self._codes(route, loaded, src, tgt)
        tok = loaded.tokenizer
        if src_code:
            tok.src_lang = src_code
        forced_bos: int | None = None
        if loaded.family == "nllb":
            forced_bos = tok.convert_tokens_to_ids(tgt_code)
        elif loaded.family == "m2m100":
            forced_bos = tok.get_lang_id(tgt_code)
        inputs = [f"{route.target_token} {t}" if route.target_token else t for t in texts]
        n_best = max(1, int(n_best))
        beams = 1 if sample else (self.num_beams or (DEFAULT_N_BEST_BEAMS if n_best > 1 else 1))
        beams = max(beams, n_best) if not sample else 1
        lengths = [len(ids) for ids in tok(inputs, add_special_tokens=True)["input_ids"]]
        out: list[list[Candidate]] = [[] for _ in texts]
        cost = seq2seq_cost(max(beams, n_best))

        def step(part: Sequence[int]) -> list[list[Candidate]]:
            return self._generate(
                loaded, [inputs[i] for i in part], forced_bos, n_best=n_best, beams=beams, sample=sample, seed=seed
            )

        def too_big(i: int) -> list[Candidate]:
            log.warning("out of memory translating one text of %d tokens: no candidate for it", lengths[i])
            return []

        for batch in pack_batches(lengths, self.batch_tokens, cost, longest_first=True):
            for i, cands in zip(batch, run_split_on_oom(batch, step, too_big, device=loaded.device)):
                out[i] = cands
        return out

    def _generate(
        self,
        loaded: _Loaded,
        texts: list[str],
        forced_bos: int | None,
        *,
        n_best: int,
        beams: int,
        sample: bool,
        seed: int,
    ) -> list[list[Candidate]]:
        import torch

        tok, model = loaded.tokenizer, loaded.model
        enc = tok(texts, return_tensors="pt", padding=True).to(loaded.device)
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "num_beams": beams,
            "num_return_sequences": n_best,
            "do_sample": sample,
            "output_scores": True,
            "return_dict_in_generate": True,
        }
        if forced_bos is not None:
            kwargs["forced_bos_token_id"] = forced_bos
        if beams > 1:
            kwargs["early_stopping"] = True
        if sample:
            # Seeded per batch: the same call on the same texts gives the same samples.
            torch.manual_seed(seed)
        with torch.inference_mode():
            gen = model.generate(**enc, **kwargs)
        scores = self._scores(model, gen, beams)
        decoded = tok.batch_decode(gen.sequences, skip_special_tokens=True)
        raws = tok.batch_decode(gen.sequences, skip_special_tokens=False)
        results: list[list[Candidate]] = []
        for row in range(len(texts)):
            cands = []
            for k in range(n_best):
                j = row * n_best + k
                cands.append(
                    Candidate(
                        text=decoded[j].strip(),
                        score=scores[j],
                        raw=raws[j],
                        meta={"family": loaded.family, "first_token": int(gen.sequences[j, 1])},
                    )
                )
            cands.sort(key=lambda c: -(c.score if c.score is not None else float("-inf")))
            results.append(cands)
        return results

    @staticmethod
    def _scores(model: Any, gen: Any, beams: int) -> list[float | None]:
        """Mean log-probability per generated token, up to and including the first EOS."""
        import torch

        if not getattr(gen, "scores", None):
            return [None] * gen.sequences.shape[0]
        trans = model.compute_transition_scores(
            gen.sequences,
            gen.scores,
            beam_indices=getattr(gen, "beam_indices", None) if beams > 1 else None,
            normalize_logits=beams == 1,
        )
        steps = trans.shape[1]
        tokens = gen.sequences[:, -steps:]
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        is_eos = torch.zeros_like(tokens, dtype=torch.bool)
        for e in eos_ids:
            is_eos |= tokens == e
        # Keep every step up to and including the first EOS; steps after it are padding.
        after_eos = (torch.cumsum(is_eos.int(), dim=1) - is_eos.int()) > 0
        keep = ~after_eos & torch.isfinite(trans)
        total = torch.where(keep, trans, torch.zeros_like(trans)).sum(dim=1)
        count = keep.sum(dim=1).clamp(min=1)
        return [float(v) for v in (total / count).tolist()]

    def close(self) -> None:
        """Drop the models this engine loaded from the process-wide cache."""
        for key in self._keys:
            _LOADED.pop(key, None)
        self._keys.clear()


def describe(model: str) -> dict[str, Any]:
    """Family, parameter count and revision of a model (for the benchmark and ``translate eval``)."""
    loaded = load(model, revision=None, device="cpu", dtype="float32")
    params = sum(p.numel() for p in loaded.model.parameters())
    return {"model": model, "family": loaded.family, "params": params, "revision": model_revision(model)}

