"""The store's in-process table cache gives what parsing the shards gives, after appends too."""

from __future__ import annotations

from pathlib import Path

from xsafety import store as store_module
from xsafety.records import Response
from xsafety.store import Store


def _resp(i: int, text: str | None = None) -> Response:
    return Response(key=f"k{i}", prompt_id=f"p{i}", set="s", locale="en", model="m", text=text or f"answer {i}")


def _fresh(path: Path) -> tuple[dict[str, Response], set[str], int]:
    """load(), keys() and the duplicate count as a process that never read the table sees them."""
    store_module._LOAD_CACHE.clear()
    table = Store(path).table(Response)
    loaded = table.load()
    return loaded, table.keys(), table.last_load.duplicates


def test_records_appended_as_parsed_are_served_like_a_fresh_parse(tmp_path: Path) -> None:
    table = Store(tmp_path).table(Response)
    table.append([_resp(i) for i in range(3)], as_parsed=True)  # into an empty table
    table.load()
    # A duplicate key (the first copy wins) and new keys, appended to a table this process holds.
    table.append([_resp(1, "a second copy"), _resp(3), _resp(4)], as_parsed=True)
    cached, cached_keys, cached_dups = table.load(), table.keys(), table.last_load.duplicates
    assert (cached, cached_keys, cached_dups) == _fresh(tmp_path)
    assert cached["k1"].text == "answer 1" and list(cached) == ["k0", "k1", "k2", "k3", "k4"]


def test_a_shard_written_by_someone_else_is_parsed_not_served_from_the_cache(tmp_path: Path) -> None:
    mine = Store(tmp_path).table(Response)
    mine.append([_resp(0)], as_parsed=True)
    mine.load()
    # Another writer (another process, or a writer that does not keep the cache) adds a shard.
    with Store(tmp_path).table(Response).writer() as w:
        w.write(_resp(7))
    assert set(mine.load()) == {"k0", "k7"} and mine.keys() == {"k0", "k7"}


def test_a_plain_append_leaves_the_cache_to_a_reparse(tmp_path: Path) -> None:
    table = Store(tmp_path).table(Response)
    table.append([_resp(0)])
    table.load()
    table.append([_resp(1)])  # not as_parsed: the records may not be what parsing gives back
    assert table.load() == _fresh(tmp_path)[0]


def test_records_appended_as_parsed_are_stored_as_write_stores_them(tmp_path: Path) -> None:
    from xsafety.records import GateResult, Translation

    rec = Translation(key="k1", prompt_id="p1", set="s", locale="zh", source="How?", text="怎么？ \ud800",
                      engine="reference|x", gates=(GateResult("copy", 0.1, 0.6, True, "ok"),),
                      attempts=({"step": "first", "failed": []},), meta={"signals": {"a": 1.0}})
    Store(tmp_path / "a").table(Translation).append([rec])
    Store(tmp_path / "b").table(Translation).append([rec], as_parsed=True)
    [shard_a] = Store(tmp_path / "a").table(Translation).shards()
    [shard_b] = Store(tmp_path / "b").table(Translation).shards()
    assert shard_a.read_bytes() == shard_b.read_bytes()


def test_loaded_serves_only_a_table_held_as_it_is_on_disk(tmp_path: Path) -> None:
    store_module._LOAD_CACHE.clear()
    table = Store(tmp_path).table(Response)
    with table.writer() as w:
        for i in range(3):
            w.write(_resp(i))
    assert table.loaded() is None  # never loaded here: nothing is parsed to answer
    assert not store_module._LOAD_CACHE
    held = table.load()
    assert table.loaded() == held
    with Store(tmp_path).table(Response).writer() as w:  # a shard this process does not hold
        w.write(_resp(9))
    assert table.loaded() is None


def test_loaded_is_none_when_a_row_was_dropped_as_corrupt(tmp_path: Path) -> None:
    store_module._LOAD_CACHE.clear()
    table = Store(tmp_path).table(Response)
    with table.writer() as w:
        w.write(_resp(0))
        path = w.path
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"key": "k1", "not": "a response"}\n')
    assert list(table.load()) == ["k0"]
    assert table.loaded() is None  # a reader of the rows must see what parsing them gives


def test_translations_written_to_their_file_are_copied_into_the_store_as_written(tmp_path: Path) -> None:
    """A run copies the translations it just wrote into its store as the lines it wrote (no second
    serialising): the shard must be byte for byte what serialising the records gives."""
    from xsafety.records import GateResult, Translation
    from xsafety.translate import files

    recs = [Translation(key=f"k{i}", prompt_id=f"p{i}", set="s", locale="zh", source="How?", text=f"怎么{i}？",
                        engine="reference|x", gates=(GateResult("langid", 0.9, 0.5, True, "ok"),),
                        attempts=({"step": "first", "failed": []},), meta={"signals": {"a": 1.0}}) for i in range(3)]
    path = files.translation_path(tmp_path / "tr", "s", "zh")
    lines = {r.prompt_id: files.to_line(r) for r in recs}
    files.write_file(path, recs, lines=lines, remember=True)
    served = files.read_file(path)  # what the plan's index hands the snapshot: the same objects
    assert all(files.line_of(served[r.prompt_id]) == lines[r.prompt_id] for r in recs)
    asked: list[str] = []

    def spy(record: Translation) -> str | None:
        line = files.line_of(record)
        asked.append("known" if line is not None else "unknown")
        return line

    Store(tmp_path / "a").table(Translation).append(list(served.values()), as_parsed=True, line_of=spy)
    Store(tmp_path / "b").table(Translation).append(recs)
    [shard_a] = Store(tmp_path / "a").table(Translation).shards()
    [shard_b] = Store(tmp_path / "b").table(Translation).shards()
    assert asked == ["known"] * 3 and shard_a.read_bytes() == shard_b.read_bytes()
    # A file rewritten without ``remember`` forgets the lines: they may no longer be these records'.
    files.write_file(path, recs)
    assert all(files.line_of(r) is None for r in served.values())
