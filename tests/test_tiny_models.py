"""The tiny offline models load back through the Auto classes, as a user's hub model would."""

from pathlib import Path

from tiny_models import build_tiny_classifier, build_tiny_llama


def test_tiny_llama_round_trips_and_generates(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny_llama(tmp_path / "llama")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    ids = tok.apply_chat_template([{"role": "user", "content": "Hello there"}], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]


def test_tiny_classifier_round_trips(tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = build_tiny_classifier(tmp_path / "clf", labels=("safe", "unsafe", "refusal"))
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path)
    logits = model(**tok(["a test"], return_tensors="pt")).logits
    assert logits.shape == (1, 3)
    assert model.config.id2label[2] == "refusal"
