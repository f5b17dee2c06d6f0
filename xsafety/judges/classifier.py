"""The ``classifier`` judge: a transformers sequence-classification model with a label map.

The TOML names the model (a hub id in the local cache, or a folder), maps each of the model's
labels to one of the four public labels (or ``compliance``), and optionally sets a threshold:
``threshold = 0.7`` with ``positive = "unsafe"`` calls an item by the positive model label only
when its probability reaches 0.7, else by the most probable other label. Inputs are the
(prompt, response) pair (``input = "pair"``) or the response alone (``input = "response"``),
batched by ``batch_size`` on CPU or CUDA.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xsafety.errors import ConfigError
from xsafety.judges.base import JudgeInput, JudgeOutput, check_label
from xsafety.records import signature

log = logging.getLogger(__name__)

INPUTS = ("pair", "response")


class ClassifierJudge:
    """Sequence classifier judge (see the module docstring)."""

    kind = "classifier"

    def __init__(
        self,
        name: str = "classifier",
        *,
        model: str,
        labels: dict[str, str],
        threshold: float | None = None,
        positive: str | None = None,
        input: str = "pair",
        max_length: int = 512,
        batch_size: int = 16,
        device: str = "auto",
        base_dir: str | Path | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if input not in INPUTS:
            raise ConfigError(f"input must be one of {', '.join(INPUTS)}", field="input")
        for model_label, label in labels.items():
            try:
                check_label(label)
            except ValueError as exc:
                raise ConfigError(str(exc), field=f"labels.{model_label}") from None
        path = Path(model).expanduser()
        if not path.is_absolute() and base_dir and (Path(base_dir) / path).is_dir():
            path = Path(base_dir) / path
        self.name = name
        self.model_ref = str(path) if path.is_dir() else model
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_ref)
        self.model = AutoModelForSequenceClassification.from_pretrained(self.model_ref)
        self.model.eval()
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.model.to(device)
        id2label = {int(k): str(v) for k, v in self.model.config.id2label.items()}
        missing = [lab for lab in id2label.values() if lab not in labels]
        if missing:
            raise ConfigError(
                f"model label {missing[0]!r} has no mapping (model labels: {', '.join(id2label.values())})",
                field="labels",
            )
        if positive is not None and positive not in id2label.values():
            raise ConfigError(f"positive label {positive!r} is not a model label", field="positive")
        if threshold is not None and positive is None:
            raise ConfigError("a threshold needs `positive`, the model label it applies to", field="threshold")
        self.id2label = id2label
        self.labels = dict(labels)
        self.threshold = threshold
        self.positive = positive
        self.input = input
        self.max_length = int(max_length)
        self.batch_size = max(1, int(batch_size))
        self._fingerprint = self._weights_id(path)

    @staticmethod
    def _weights_id(path: Path) -> str:
        if path.is_dir():
            from xsafety.models.hf import weights_fingerprint

            return weights_fingerprint(path)
        return "hub"

    def signature(self) -> str:
        """Model (with a weights fingerprint for folders), label map, threshold and input form."""
        return signature(
            self.kind,
            model=self.model_ref if self._fingerprint == "hub" else Path(self.model_ref).name,
            weights=self._fingerprint,
            labels=self.labels,
            threshold=self.threshold,
            positive=self.positive,
            input=self.input,
            max_length=self.max_length,
        )

    def judge(self, items: Sequence[JudgeInput]) -> list[JudgeOutput]:
        """Classify in batches; a failing batch yields error outputs for its items, not a crash."""
        import torch

        out: list[JudgeOutput] = []
        for start in range(0, len(items), self.batch_size):
            batch = items[start : start + self.batch_size]
            try:
                if self.input == "pair":
                    enc = self.tokenizer(
                        [i.prompt for i in batch], [i.response for i in batch], truncation=True,
                        max_length=self.max_length, padding=True, return_tensors="pt",
                    )
                else:
                    enc = self.tokenizer(
                        [i.response for i in batch], truncation=True, max_length=self.max_length,
                        padding=True, return_tensors="pt",
                    )
                enc = {k: v.to(self.device) for k, v in enc.items()}
                with torch.inference_mode():
                    probs = torch.softmax(self.model(**enc).logits.float(), dim=-1).cpu()
            except Exception as exc:  # one bad batch must not lose the rest of the run
                log.warning("classifier batch failed: %s", exc)
                out.extend(JudgeOutput("invalid", f"classifier failed: {exc}", error=f"model: {exc}") for _ in batch)
                continue
            for row in probs:
                out.append(self._decide([float(p) for p in row]))
        return out

    def _decide(self, probs: list[float]) -> JudgeOutput:
        scores = {self.id2label[i]: p for i, p in enumerate(probs)}
        if self.positive is not None and self.threshold is not None:
            if scores[self.positive] >= self.threshold:
                chosen = self.positive
            else:
                chosen = max((k for k in scores if k != self.positive), key=scores.__getitem__)
        else:
            chosen = max(scores, key=scores.__getitem__)
        rounded = {k: round(v, 4) for k, v in scores.items()}
        return JudgeOutput(
            label=self.labels[chosen],
            rationale=f"classifier: {chosen} ({scores[chosen]:.2f})",
            raw=str(rounded),
            meta={"scores": rounded, "model_label": chosen},
        )

    def close(self) -> None:
        """Release the model."""
        self.model = None  # type: ignore[assignment]
