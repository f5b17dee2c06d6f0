from xsafety.records import GateResult, Prompt, Response, Translation, signature, stable_hash


def test_signature_is_sorted_and_drops_none() -> None:
    assert signature("x", model="m", temperature=0.0, seed=None, greedy=True) == "x|greedy:yes|model:m|temperature:0"
    # A kind with an implementation version carries it (xsafety/versions.py).
    assert signature("hf", model="m", temperature=0.0) == "hf|impl:1|model:m|temperature:0"


def test_stable_hash_depends_on_every_part() -> None:
    a = stable_hash("x", {"b": 1, "a": 2})
    assert a == stable_hash("x", {"a": 2, "b": 1})
    assert a != stable_hash("x", {"a": 2, "b": 2})
    assert len(a) == 20


def test_prompt_round_trip_restores_tuples() -> None:
    p = Prompt(id="p1", text="t", category="crime_theft", source="builtin", tags=("a", "b"))
    q = Prompt.from_dict(p.to_dict())
    assert q == p and isinstance(q.tags, tuple)


def test_translation_round_trip_restores_gates() -> None:
    t = Translation(
        key="k", prompt_id="p", set="s", locale="es", source="hi", text="hola", engine="e",
        gates=(GateResult("chrf", 50.0, 30.0, True),), attempts=({"text": "hola"},),
    )
    u = Translation.from_dict(t.to_dict())
    assert u == t
    assert u.gate("chrf") == GateResult("chrf", 50.0, 30.0, True)


def test_unknown_fields_are_ignored() -> None:
    d = Response(key="k", prompt_id="p", set="s", locale="en", model="m", text="t").to_dict()
    d["added_later"] = 1
    assert Response.from_dict(d).key == "k"


def test_to_dict_and_from_dict_match_the_dataclasses_round_trip() -> None:
    """The one-pass to_dict equals asdict's deep copy made JSON-safe, and from_dict restores nested
    tuples (gate results, attempts) exactly as the per-field restore does."""
    import dataclasses

    from xsafety.records import GateResult, Translation, _restore, _to_jsonable

    gate = GateResult(name="langid", score=0.9, threshold=0.5, passed=True, detail="x")
    rec = Translation(key="k", prompt_id="p", set="s", locale="de", source="a", text="b", engine="e",
                      gates=(gate, gate), attempts=({"step": "first", "gates": [1, (2, 3)]},), meta={1: {"a": (1,)}})
    assert rec.to_dict() == _to_jsonable(dataclasses.asdict(rec))
    back = Translation.from_dict(rec.to_dict())
    assert back.gates == (gate, gate) and isinstance(back.attempts, tuple)
    hints = {f.name: f.type for f in dataclasses.fields(Translation)}
    assert back.attempts == _restore(rec.to_dict()["attempts"], tuple[dict, ...]) and hints
