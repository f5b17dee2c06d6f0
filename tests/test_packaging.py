"""Users who `pip install` the package get the data folders, found by the one lookup in xsafety.data."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def unpacked_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
    )
    if build.returncode != 0:
        pytest.skip(f"could not build the wheel here (needs hatchling from PyPI): {build.stderr[-300:]}")
    wheel = next(out.glob("xsafety-*.whl"))
    target = out / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)
    return target


def test_wheel_carries_the_data_folders(unpacked_wheel: Path) -> None:
    data = unpacked_wheel / "xsafety" / "_data"
    for rel in (
        "taxonomy/categories.toml",
        "taxonomy/builtin.jsonl",
        "taxonomy/attacks/role_play.toml",
        "taxonomy/policies/default.toml",
        "translations/locales.toml",
        "translations/builtin/es.jsonl",
        "judges/default.toml",
        "judges/refusal/zh.txt",
    ):
        assert (data / rel).is_file(), rel


def test_installed_package_finds_its_data(unpacked_wheel: Path, tmp_path: Path) -> None:
    code = (
        "import xsafety.data as d\n"
        "from xsafety.taxonomy import load_set\n"
        "from xsafety.locales import load_locales\n"
        "from xsafety.translate import available_locales\n"
        "from xsafety.judges import load_judge\n"
        "print(d.data_root()); print(d.is_source_checkout()); print(len(load_set('builtin')))\n"
        "print(len(load_locales())); print(','.join(available_locales('builtin'))); load_judge('default')\n"
    )
    env = {"PYTHONPATH": str(unpacked_wheel), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    root, checkout, prompts, locales, committed = run.stdout.split("\n")[:5]
    assert Path(root) == unpacked_wheel / "xsafety" / "_data"
    assert checkout == "False"
    assert int(prompts) >= 120 and int(locales) >= 40
    assert set(committed.split(",")) >= {"es", "ca", "gl", "eo", "hbs"}
