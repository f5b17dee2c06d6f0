"""A stratified sample in a run config and on the command line: validated where it is given,
applied where ``limit`` is (sample first, then limit)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xsafety.cli import app
from xsafety.config import load_config
from xsafety.errors import ConfigError
from xsafety.plan import load_prompts
from xsafety.sampling import Sample, category_of
from xsafety.taxonomy import load_set


def _config(tmp_path: Path, run_lines: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(f'[run]\ndir = "{tmp_path / "run"}"\nsets = ["builtin"]\nlocales = ["en"]\n{run_lines}\n', encoding="utf-8")
    return path


def test_config_sample_takes_n_per_category_then_limit(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, 'sample = {per_category = 1, by = "alert", seed = 3}'))
    assert config.sample == Sample(1, "alert", 3)
    full = load_set("builtin")
    chosen = next(iter(load_prompts(config).values()))
    per = Counter(category_of(p, "alert") for p in chosen)
    assert set(per) == {category_of(p, "alert") for p in full}
    assert set(per.values()) == {1}
    limited = load_config(_config(tmp_path, 'limit = 2\nsample = {per_category = 1, seed = 3}'))
    # The limit trims the sample, not the set: its prompts are the sample's first two.
    assert next(iter(load_prompts(limited).values())) == chosen[:2]


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('sample = {per_category = 0}', "run.sample.per_category"),
        ('sample = {per_category = 2, by = "topic"}', "run.sample.by"),
        ('sample = {per_category = 2, size = 3}', "run.sample.size"),
        ('sample = 3', "run.sample"),
    ],
)
def test_bad_sample_names_file_line_and_field(tmp_path: Path, line: str, field: str) -> None:
    path = _config(tmp_path, line)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:5:"), message
    assert f"'{field}'" in message


def test_cli_sample_is_checked_before_any_work(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["generate", "--model", "smollm2", "--run-dir", str(tmp_path / "r"), "--sample", "three"])
    assert result.exit_code == 2
    assert "--sample" in result.output and "N[:alert|source[:SEED]]" in result.output
    assert not (tmp_path / "r").exists()
