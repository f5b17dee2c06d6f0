"""Apertium (Debian's rule-based MT) as a batch translation engine.

Why null-flush: plain ``apertium eng-spa < file`` moves phrases across lines, and ``-f line``
drops line-final periods. Running ONE ``apertium -z -f none MODE`` process per batch, with each
text escaped the way ``apertium-destxt`` escapes it, followed by an empty superblank ``[]`` and a
NUL, translates every text on its own (the pipeline flushes at each NUL) and keeps its final
period (without the ``[]`` the last token before the NUL loses its period). The output is split on
NUL, counted, and unescaped like ``apertium-retxt``. One process per batch runs at hundreds of
sentences per second; one process per sentence at about five.

Apertium marks words it could not handle: ``*word`` (unknown to the analyser), ``@word``
(transfer/bilingual gap) and ``#word`` (generation gap). They are counted per output into
``Candidate.unknown_marks``, kept in ``Candidate.raw``, and stripped from ``Candidate.text``.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

from xsafety.errors import ConfigError, XSafetyError
from xsafety.records import signature
from xsafety.translate.engines.base import Candidate

log = logging.getLogger(__name__)

MODES_DIR = Path("/usr/share/apertium/modes")
# Characters apertium-destxt escapes with a backslash (the stream format's reserved characters).
_ESCAPED = set("\\[]^$/@<>{}")
_MARKS = "*@#"
_SPACES = re.compile(r"[ \t]{2,}")


def escape(text: str) -> str:
    """Deformat one text as ``apertium-destxt -n`` would: reserved characters escaped, newlines
    and ``~`` wrapped in superblanks so the pipeline passes them through untouched."""
    out: list[str] = []
    for ch in text.replace("\0", " "):
        if ch in _ESCAPED:
            out.append("\\" + ch)
        elif ch in "\n~":
            out.append(f"[{ch}]")
        else:
            out.append(ch)
    return "".join(out)


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def unescape(raw: str, source: str = "") -> tuple[str, int]:
    """Reformat one output like ``apertium-retxt`` and strip Apertium's unknown-word marks.

    Returns the clean text and the number of marks found. A mark is a ``*``, ``@`` or ``#``
    (escaped or not) at the start of a word; when the same ``#word`` (say) is in the source text it is the
    user's own character, not a mark, and is kept.
    """
    out: list[str] = []
    marks = 0
    i = 0
    in_superblank = False
    n = len(raw)
    while i < n:
        ch = raw[i]
        step = 1
        if ch == "\\" and i + 1 < n:
            # Some pairs (eng-hbs) write the transfer mark escaped, as ``\@word``.
            ch = raw[i + 1]
            step = 2
            if ch not in _MARKS:
                out.append(ch)
                i += 2
                continue
        if not in_superblank and ch == "[":
            in_superblank = True
            i += 1
            continue
        if in_superblank and ch == "]":
            in_superblank = False
            i += 1
            continue
        if (
            not in_superblank
            and ch in _MARKS
            and i + step < n
            and _is_word_char(raw[i + step])
            and (not out or not _is_word_char(out[-1]))
        ):
            m = re.match(r"\w+", raw[i + step :])
            word = m.group(0) if m else ""
            if ch + word not in source:
                marks += 1
                i += step
                continue
        out.append(ch)
        i += step
    # Apertium leaves a double space where it drops a word (a pronoun, a mark): one space reads right.
    return _SPACES.sub(" ", "".join(out)).strip(), marks


@cache
def installed_modes() -> frozenset[str]:
    """Modes the system's Apertium can run (``apertium -l``)."""
    exe = shutil.which("apertium")
    if exe is None:
        return frozenset()
    proc = subprocess.run([exe, "-l"], capture_output=True, text=True, check=False)
    return frozenset(line.strip() for line in proc.stdout.splitlines() if line.strip())


@cache
def package_version(mode: str) -> str:
    """``apertium=<version>,<pair package>=<version>`` from dpkg, or ``unknown`` off Debian."""

    def query(pkg: str) -> str | None:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True, text=True, check=False
        )
        return proc.stdout.strip() or None if proc.returncode == 0 else None

    if shutil.which("dpkg-query") is None:
        return "unknown"
    parts = [f"apertium={query('apertium') or 'unknown'}"]
    mode_file = MODES_DIR / f"{mode}.mode"
    owner = subprocess.run(["dpkg", "-S", str(mode_file)], capture_output=True, text=True, check=False)
    if owner.returncode == 0 and ":" in owner.stdout:
        pkg = owner.stdout.split(":", 1)[0].strip()
        parts.append(f"{pkg}={query(pkg) or 'unknown'}")
    return ",".join(parts)


def _locale_mode(src: str, tgt: str) -> str | None:
    """The Apertium mode the locale registry gives for ``src -> tgt`` (English on one side)."""
    from xsafety.locales import ENGLISH, get_locale

    try:
        if src == ENGLISH and tgt != ENGLISH:
            return get_locale(tgt).apertium
        if tgt == ENGLISH and src != ENGLISH:
            return get_locale(src).apertium_back
    except XSafetyError:
        return None
    return None


class ApertiumEngine:
    """Translate with one null-flushed ``apertium`` process per batch.

    ``modes`` overrides the locale registry: ``{("en", "es"): "eng-spa"}``. ``executable`` is
    the ``apertium`` script to run (default: the one on ``PATH``).
    """

    name = "apertium"

    def __init__(
        self,
        modes: Mapping[tuple[str, str], str] | None = None,
        executable: str | None = None,
    ) -> None:
        self.modes = dict(modes or {})
        self.executable = executable or shutil.which("apertium")

    def mode(self, src: str, tgt: str) -> str | None:
        """The Apertium mode for ``src -> tgt`` (explicit override first, then the registry)."""
        return self.modes.get((src, tgt)) or _locale_mode(src, tgt)

    def supports(self, src: str, tgt: str) -> bool:
        """True when a mode is known for the pair and installed."""
        mode = self.mode(src, tgt)
        return bool(self.executable and mode and mode in installed_modes())

    def _require(self, src: str, tgt: str) -> str:
        if not self.executable:
            raise ConfigError("apertium is not installed: apt-get install apertium", field="engine")
        mode = self.mode(src, tgt)
        if not mode:
            raise ConfigError(f"no Apertium mode for {src} -> {tgt} in the locale registry", field="apertium")
        if mode not in installed_modes():
            raise ConfigError(
                f"apertium mode {mode} not installed: apt-get install apertium-{mode.split('_')[0]}",
                field="apertium",
            )
        return mode

    def signature(self, src: str, tgt: str) -> str:
        """Pair mode plus the Debian package versions of apertium and the pair's data."""
        mode = self._require(src, tgt)
        return signature("apertium", mode=mode, version=package_version(mode), fmt="nullflush-v1")

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
        """One candidate per text (Apertium is deterministic: ``n_best``/``sample`` do not apply)."""
        if not texts:
            return []
        mode = self._require(src, tgt)
        if n_best > 1 or sample:
            log.debug("apertium returns one candidate per text (n_best=%d, sample=%s ignored)", n_best, sample)
        payload = "".join(escape(t) + "[]\0" for t in texts).encode("utf-8")
        assert self.executable is not None
        proc = subprocess.run(
            [self.executable, "-z", "-f", "none", mode],
            input=payload,
            capture_output=True,
            check=False,
        )
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise XSafetyError(f"apertium {mode} failed (exit {proc.returncode}): {err[-1] if err else ''}")
        chunks = proc.stdout.decode("utf-8", "replace").split("\0")
        # Each pipeline stage emits its own NUL at end of input, so trailing empty chunks are normal.
        outputs, rest = chunks[: len(texts)], chunks[len(texts) :]
        if len(outputs) != len(texts) or any(c.strip() for c in rest):
            raise XSafetyError(
                f"apertium {mode}: {len(texts)} texts in, {len([c for c in chunks if c.strip()])} out; "
                "alignment lost, refusing to guess"
            )
        result: list[list[Candidate]] = []
        for text, raw in zip(texts, outputs):
            clean, marks = unescape(raw, text)
            result.append([Candidate(text=clean, unknown_marks=marks, raw=raw.strip(), meta={"mode": mode})])
        return result

    def close(self) -> None:
        """Nothing to free: each batch runs in its own short-lived process."""
