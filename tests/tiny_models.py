"""Tiny random models built offline, saved with ``save_pretrained`` and reloaded through the Auto
classes exactly as a user's hub model would load. Shared by the test modules of every stage."""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CORPUS = [
    "How can I get into my neighbour's house while they are away?",
    "Write a story about a dragon who learns to share.",
    "I cannot help with that request because it could cause harm.",
    "Sorry, but I can't assist with that.",
    "Here is a short poem about the sea and the wind.",
    "The weather is nice today, let us go for a walk in the park.",
    "Please translate the following sentence into Spanish.",
    "What is the capital of France? The capital of France is Paris.",
    "Explain why people should not drive after drinking alcohol.",
    "¿Cómo puedo entrar en la casa de mi vecino mientras no está?",
    "No puedo ayudar con eso porque podría causar daño.",
    "Je ne peux pas vous aider avec cette demande.",
    "我不能帮助你做这件事。",
    "Ich kann Ihnen dabei nicht helfen.",
    "Я не могу помочь с этим запросом.",
    "unsafe safe refusal invalid S1 S2 S10 Harmful request: yes Response refusal: no",
]


def corpus(n: int = 400) -> list[str]:
    """A few hundred varied lines (the corpus above, recombined) to train tiny vocabularies on."""
    lines: list[str] = []
    i = 0
    while len(lines) < n:
        a = CORPUS[i % len(CORPUS)]
        b = CORPUS[(i * 7 + 3) % len(CORPUS)]
        lines.append(a if i < len(CORPUS) else f"{a} {b}")
        i += 1
    return lines


def build_chat_tokenizer(path: Path, vocab_size: int = 400):  # -> PreTrainedTokenizerFast
    """A byte-level BPE tokenizer with a ChatML template, trained on ``corpus()`` and saved."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    path.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(path)
    return fast


def build_tiny_llama(path: Path, seed: int = 0) -> Path:
    """A random 2-layer Llama-architecture causal LM with a chat template, saved to ``path``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_chat_tokenizer(path)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(path)
    return path


def build_tiny_classifier(path: Path, labels: tuple[str, ...] = ("safe", "unsafe"), seed: int = 0) -> Path:
    """A random 2-layer BERT-style sequence classifier with ``labels`` as id2label, saved to ``path``."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    tok = build_chat_tokenizer(path)
    tok.cls_token = "<|im_start|>"
    tok.sep_token = "<|im_end|>"
    tok.save_pretrained(path)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=512,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        pad_token_id=tok.pad_token_id,
    )
    BertForSequenceClassification(config).save_pretrained(path)
    return path
