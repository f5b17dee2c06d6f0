"""Tiny random translation models (Marian, M2M100, NLLB-style) built offline for the engine tests
and the translation benchmark. Each is saved with ``save_pretrained`` and loads back through the
Auto classes by path, exactly as a user's hub model would.

Recipe (measured, see DESIGN.md): sentencepiece trained on ~400 lines with a small vocabulary and
``hard_vocab_limit=False``; Marian uses the same spm file as ``source.spm`` and ``target.spm`` plus
a ``vocab.json``; M2M100 needs ``vocab.json`` + ``sentencepiece.bpe.model`` and a model vocabulary
of max(token ids, language ids) + 1 + ``num_madeup_words``; NLLB exists only as a fast tokenizer
and needs its FLORES language codes passed as ``extra_special_tokens``.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.tiny_models import corpus

NLLB_CODES = ["eng_Latn", "spa_Latn", "swh_Latn", "fra_Latn"]
MARIAN_TARGET_TOKENS = [">>spa<<", ">>fra<<"]


def _train_spm(path: Path, vocab_size: int = 140, lines: list[str] | None = None) -> Path:
    """A unigram sentencepiece model trained on ``lines`` (default ``corpus()``); returns the ``.model`` path."""
    import sentencepiece as spm

    path.mkdir(parents=True, exist_ok=True)
    text = path / "corpus.txt"
    text.write_text("\n".join(lines or corpus()) + "\n", encoding="utf-8")
    prefix = path / "spm"
    spm.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(prefix),
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        character_coverage=1.0,
        minloglevel=2,
    )
    text.unlink()
    return prefix.with_suffix(".model")


def _pieces(model_file: Path) -> list[str]:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size())]


def build_tiny_marian(
    path: Path,
    *,
    d_model: int = 32,
    layers: int = 2,
    ffn: int = 64,
    heads: int = 2,
    seed: int = 0,
    vocab_size: int = 140,
    lines: list[str] | None = None,
) -> Path:
    """A random Marian model with an opus-mt style tokenizer (and ``>>spa<<``-style target tokens).

    ``lines`` trains the vocabulary on other text (a benchmark wants real sentence lengths)."""
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    work = path / "_spm"
    model_file = _train_spm(work, vocab_size, lines)
    path.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {"</s>": 0, "<unk>": 1}
    for tok in MARIAN_TARGET_TOKENS:
        vocab[tok] = len(vocab)
    for piece in _pieces(model_file):
        vocab.setdefault(piece, len(vocab))
    vocab["<pad>"] = len(vocab)
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    for name in ("source.spm", "target.spm"):
        (path / name).write_bytes(model_file.read_bytes())
    tok = MarianTokenizer(
        source_spm=str(path / "source.spm"), target_spm=str(path / "target.spm"), vocab=str(path / "vocab.json")
    )
    tok.save_pretrained(path)
    torch.manual_seed(seed)
    config = MarianConfig(
        vocab_size=len(vocab),
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=ffn,
        decoder_ffn_dim=ffn,
        max_position_embeddings=256,
        pad_token_id=vocab["<pad>"],
        eos_token_id=0,
        decoder_start_token_id=vocab["<pad>"],
        forced_eos_token_id=0,
    )
    MarianMTModel(config).eval().save_pretrained(path)
    _cleanup(work)
    return path


def _save_tiny_m2m100(path: Path, vocab_size: int) -> None:
    """Random 2+2-layer M2M100 weights (the architecture M2M100 and NLLB share), saved to ``path``."""
    from transformers import M2M100Config, M2M100ForConditionalGeneration

    config = M2M100Config(
        vocab_size=vocab_size,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=256,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
    )
    M2M100ForConditionalGeneration(config).eval().save_pretrained(path)


def build_tiny_m2m100(path: Path, *, seed: int = 0) -> Path:
    """A random M2M100 model with its slow sentencepiece tokenizer and the 100 language codes."""
    import torch
    from transformers import M2M100Tokenizer

    work = path / "_spm"
    model_file = _train_spm(work)
    path.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for piece in _pieces(model_file):
        vocab.setdefault(piece, len(vocab))
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (path / "sentencepiece.bpe.model").write_bytes(model_file.read_bytes())
    tok = M2M100Tokenizer(
        vocab_file=str(path / "vocab.json"), spm_file=str(path / "sentencepiece.bpe.model"), src_lang="en", tgt_lang="es"
    )
    tok.save_pretrained(path)
    # len(tokenizer) raises IndexError on this tokenizer; count ids instead.
    size = max(max(vocab.values()), max(tok.lang_code_to_id.values())) + 1 + tok.num_madeup_words
    torch.manual_seed(seed)
    _save_tiny_m2m100(path, size)
    _cleanup(work)
    return path


def build_tiny_nllb(path: Path, *, seed: int = 0) -> Path:
    """A random NLLB-style model: M2M100 weights with a fast NLLB tokenizer and FLORES codes."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import NllbTokenizer

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<s>", "<pad>", "</s>", "<unk>"])
    bpe.train_from_iterator(corpus(), trainer=trainer)
    model_json = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model_json["merges"]]
    tok = NllbTokenizer(
        vocab=model_json["vocab"], merges=merges, extra_special_tokens=list(NLLB_CODES), src_lang="eng_Latn"
    )
    path.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(path)
    size = len(tok) + 1  # + <mask>, which the tokenizer adds after the language codes
    torch.manual_seed(seed)
    _save_tiny_m2m100(path, max(size, max(tok.convert_tokens_to_ids(NLLB_CODES)) + 2))
    return path


def _cleanup(folder: Path) -> None:
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
