"""Human reference translations brought in by importers, behind the text-in/text-out interface.

An importer stores, for an instruction set, human translations per locale and prompt id. This
engine is built for one set: it maps a source text to its prompt id(s) and returns the human
text of that prompt in the target locale. English -> locale uses the set's prompts; locale ->
English (back-translation) maps the human text back to the English prompt. A text without a
reference yields no candidate, which the stage records as rejected ("no reference").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from xsafety.records import signature, stable_hash
from xsafety.translate.engines.base import Candidate

ENGLISH = "en"


class ReferenceEngine:
    """Look human translations up instead of translating.

    ``set_name`` is the instruction set (``xsafety.taxonomy.load_set`` / ``load_references``).
    ``prompts`` (prompt id -> English text) and ``references`` (locale -> prompt id -> text) may
    be given directly instead, for sets that are not stored. With neither (``xsafety translate
    --engine reference``, where the engine is built before the set is known), every stored set
    that has references is looked in, in set-name order: the English text finds the prompt.
    """

    name = "reference"

    def __init__(
        self,
        set_name: str | None = None,
        *,
        prompts: Mapping[str, str] | None = None,
        references: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.set_name = set_name or ("custom" if prompts is not None and references is not None else "all")
        if set_name is None and (prompts is None or references is None):
            prompts, references = _every_set(prompts, references)
        if prompts is None or references is None:
            from xsafety.taxonomy import load_references, load_set

            assert set_name is not None  # set above when absent
            if prompts is None:
                prompts = {p.id: p.text for p in load_set(set_name)}
            if references is None:
                references = load_references(set_name)
        self.prompts: dict[str, str] = dict(prompts)
        self.references: dict[str, dict[str, str]] = {loc: dict(rows) for loc, rows in references.items()}
        self._by_text: dict[str, dict[str, list[str]]] = {}
        self._signatures: dict[tuple[str, str], str] = {}

    def _ids_of(self, locale: str) -> dict[str, list[str]]:
        """Text -> prompt ids for one side (English prompts, or one locale's references)."""
        if locale not in self._by_text:
            rows = self.prompts if locale == ENGLISH else self.references.get(locale, {})
            index: dict[str, list[str]] = {}
            for pid, text in rows.items():
                index.setdefault(text.strip(), []).append(pid)
            self._by_text[locale] = index
        return self._by_text[locale]

    def _side(self, locale: str) -> Mapping[str, str]:
        return self.prompts if locale == ENGLISH else self.references.get(locale, {})

    def supports(self, src: str, tgt: str) -> bool:
        """True when the set has references on the non-English side of an English pair."""
        if src == ENGLISH:
            return tgt in self.references
        if tgt == ENGLISH:
            return src in self.references
        return src in self.references and tgt in self.references

    def signature(self, src: str, tgt: str) -> str:
        """The set and a hash of the references used, so edited references re-translate.

        Hashing a locale's references costs milliseconds and the stage asks for the signature at
        every step of every batch: it is worked out once per direction (the references are
        read once, when the engine is built).
        """
        if (src, tgt) not in self._signatures:
            side = {loc: self.references.get(loc, {}) for loc in (src, tgt) if loc != ENGLISH}
            self._signatures[(src, tgt)] = signature("reference", set=self.set_name, refs=stable_hash(side, length=12))
        return self._signatures[(src, tgt)]

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
        """The human text for each source text, or no candidate where the set has none."""
        ids = self._ids_of(src)
        target = self._side(tgt)
        out: list[list[Candidate]] = []
        for text in texts:
            found = next((pid for pid in ids.get(text.strip(), ()) if pid in target), None)
            if found is None:
                out.append([])
                continue
            out.append([Candidate(text=target[found], raw=target[found], meta={"prompt_id": found})])
        return out

    def close(self) -> None:
        """Nothing to free."""


def _every_set(
    prompts: Mapping[str, str] | None, references: Mapping[str, Mapping[str, str]] | None
) -> tuple[Mapping[str, str], Mapping[str, Mapping[str, str]]]:
    """Prompts and references of every stored set with references, ids qualified ``set/id``
    so that two sets' ids cannot collide (the first set, by name, wins a shared English text)."""
    from xsafety.taxonomy import list_sets, load_references, load_set

    all_prompts: dict[str, str] = {}
    all_refs: dict[str, dict[str, str]] = {}
    for name in sorted(list_sets()):
        refs = load_references(name)
        if not refs:
            continue
        all_prompts.update({f"{name}/{p.id}": p.text for p in load_set(name)})
        for locale, rows in refs.items():
            all_refs.setdefault(locale, {}).update({f"{name}/{pid}": text for pid, text in rows.items()})
    return (prompts if prompts is not None else all_prompts), (references if references is not None else all_refs)
