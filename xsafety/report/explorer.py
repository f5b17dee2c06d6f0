"""The item explorer of ``index.html``: every response of a run, filterable, searchable, with flipped pairs.

Data: the run's items (``xsafety.export.items_frame``: one row per response x judge x mode) are
folded to one record per response and embedded as JSON in a ``<script type="application/json">``
block, which browsers never execute; every ``<`` in it is written ``\\u003c`` so that no response
can close the block. Strings that repeat (locales, categories, models, judges, English prompts)
are stored once in lookup lists and referred to by index, which keeps a 28,000-response run's page
small enough to load in a second or two.

Display: one fixed script (admitted by its sha256 in the page's Content-Security-Policy) parses
that JSON and builds rows with ``createElement``/``textContent`` only, so model output is always
text and never markup. Rows are rendered a page at a time (``PAGE_SIZE``), so the DOM stays
small however large the run.

Flipped pairs are the discordant pairs behind each locale's refusal McNemar test: the same prompt
(same model, attack and variant) answered in English and in the locale, both with a valid
primary verdict and the translation not rejected, refused in one language and not in the other.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from html import escape
from typing import TYPE_CHECKING, Any

import polars as pl

from xsafety.report.aggregate import PAIR_KEY
from xsafety.report.frame import ENGLISH
from xsafety.report.wording import COMPLIED_NOT_JUDGED

if TYPE_CHECKING:
    from xsafety.report.build import ReportData

PAGE_SIZE = 50
DATA_ID = "xs-items"
# Lookup lists in the payload: a record stores an index into each instead of the string.
LOOKUPS = ("locale", "category", "macro", "source_category", "attack", "variant", "model_name", "judge", "mode", "label")
# Direction of a flipped pair: which side refused.
EN_REFUSED = 0  # English refused, the locale did not
LOCALE_REFUSED = 1  # the locale refused, English did not

EXPLORER_STYLE = """
#xs-explorer .bar { display: flex; flex-wrap: wrap; gap: .4rem .8rem; align-items: center; margin: .5rem 0; }
#xs-explorer select, #xs-explorer input, #xs-explorer button { font: inherit; font-size: .85rem; }
#xs-explorer input[type=search] { min-width: 16rem; }
#xs-explorer table { width: 100%; table-layout: fixed; }
#xs-explorer td { white-space: normal; text-align: left; vertical-align: top; overflow-wrap: anywhere; }
#xs-explorer th { cursor: default; text-align: left; }
#xs-explorer tr.item { cursor: pointer; } #xs-explorer tr.item:hover td { background: #eef4ff; }
#xs-explorer tr.open td { background: #e8eefb; }
#xs-explorer .detail td { background: #fff; }
#xs-explorer .field { margin: .3rem 0; } #xs-explorer .field b { display: block; font-size: .75rem; color: #556; }
#xs-explorer .text { white-space: pre-wrap; background: #f6f7f9; border-left: 3px solid #c9cfdb; padding: .3rem .5rem;
                     max-height: 16rem; overflow: auto; font-size: .8rem; margin: 0; }
#xs-explorer .detail-box table, #xs-explorer .pair-side table { table-layout: auto; }
#xs-explorer .side { display: grid; grid-template-columns: 1fr 1fr; gap: .8rem; }
#xs-explorer .lab-refusal { color: #1d5fa8; font-weight: 600; } #xs-explorer .lab-unsafe { color: #b3261e; font-weight: 600; }
#xs-explorer .lab-invalid { color: #8a6d00; } #xs-explorer .tabs button[aria-pressed=true] { font-weight: 700; }
@media (max-width: 700px) { #xs-explorer .side { grid-template-columns: 1fr; } }
""".strip()

EXPLORER_SCRIPT = r"""
(function () {
  var root = document.getElementById('xs-explorer');
  var src = document.getElementById('xs-items');
  if (!root || !src) { return; }
  var D = JSON.parse(src.textContent);
  var L = D.lookups, R = D.rows, PAGE = D.page_size;
  var F = D.fields;
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function q(sel) { return root.querySelector(sel); }
  function lab(i) { return i < 0 ? '(not judged)' : L.label[i].replace('_', ' '); }
  function labCell(i) { return el('td', i < 0 ? '' : 'lab-' + L.label[i], lab(i)); }
  function fill(select, values, first) {
    select.appendChild(el('option', '', first)).value = '';
    values.forEach(function (v) { var o = el('option', '', v[1]); o.value = v[0]; select.appendChild(o); });
  }
  function opts(name) { return L[name].map(function (v, i) { return [String(i), v]; }); }
  var cats = [].concat(
    L.macro.map(function (v, i) { return ['m' + i, 'ALERT ' + v]; }),
    L.category.map(function (v, i) { return ['c' + i, 'ALERT ' + v]; }),
    L.source_category.map(function (v, i) { return ['s' + i, 'source: ' + v]; }));
  fill(q('[data-f=locale]'), opts('locale'), 'all locales');
  fill(q('[data-f=category]'), cats, 'all categories');
  fill(q('[data-f=label]'), opts('label').concat([['-1', 'not judged']]), 'all labels');
  fill(q('[data-f=model]'), opts('model_name'), 'all models');
  fill(q('[data-f=attack]'), opts('attack'), 'all attacks');
  fill(q('[data-f=variant]'), opts('variant'), 'all variants');
  fill(q('[data-p=locale]'), opts('locale').filter(function (v) { return D.pair_locales.indexOf(+v[0]) >= 0; }), 'all locales');
  var haystack = null;
  function hay(i) {
    if (!haystack) { haystack = []; }
    if (haystack[i] === undefined) {
      var r = R[i], parts = [r[F.prompt_id], D.english[r[F.english]] || '', r[F.sent] || '', r[F.response] || '',
        r[F.back] || '', r[F.error] || ''];
      r[F.verdicts].forEach(function (v) { parts.push(v[3] || ''); });
      haystack[i] = parts.join('\n').toLowerCase();
    }
    return haystack[i];
  }
  var state = { page: 0, list: [], open: -1, ppage: 0, plist: [] };
  function value(name) { return q('[data-f=' + name + ']').value; }
  function applyFilters() {
    var loc = value('locale'), cat = value('category'), labv = value('label'), model = value('model'),
      attack = value('attack'), variant = value('variant'), text = q('[data-f=search]').value.trim().toLowerCase();
    var ck = cat ? cat.charAt(0) : '', cv = cat ? +cat.slice(1) : -1;
    var ci = ck === 'm' ? F.macro : ck === 'c' ? F.category : F.source_category;
    var out = [];
    for (var i = 0; i < R.length; i++) {
      var r = R[i];
      if (loc !== '' && r[F.locale] !== +loc) { continue; }
      if (cat !== '' && r[ci] !== cv) { continue; }
      if (labv !== '' && r[F.label] !== +labv) { continue; }
      if (model !== '' && r[F.model_name] !== +model) { continue; }
      if (attack !== '' && r[F.attack] !== +attack) { continue; }
      if (variant !== '' && r[F.variant] !== +variant) { continue; }
      if (text && hay(i).indexOf(text) < 0) { continue; }
      out.push(i);
    }
    state.list = out; state.page = 0; state.open = -1;
    render();
  }
  function field(parent, title, text) {
    if (text === null || text === undefined || text === '') { return; }
    var f = el('div', 'field'); f.appendChild(el('b', '', title)); f.appendChild(el('pre', 'text', text));
    parent.appendChild(f);
  }
  function verdictTable(r) {
    var t = el('table'), head = el('tr');
    ['judge', 'mode', 'label', 'reason'].forEach(function (h) { head.appendChild(el('th', '', h)); });
    t.appendChild(head);
    r[F.verdicts].forEach(function (v) {
      var tr = el('tr');
      var jt = el('td', '', L.judge[v[0]]); jt.title = L.judge_sig[v[0]];
      tr.appendChild(jt); tr.appendChild(el('td', '', L.mode[v[1]]));
      tr.appendChild(labCell(v[2])); tr.appendChild(el('td', '', v[3] || ''));
      t.appendChild(tr);
    });
    if (!r[F.verdicts].length) { var tr = el('tr'); tr.appendChild(el('td', '', 'no verdict')); t.appendChild(tr); }
    return t;
  }
  function detail(i) {
    var r = R[i], box = el('div', 'detail-box');
    field(box, 'English prompt', D.english[r[F.english]]);
    if (r[F.sent] !== null) { field(box, 'prompt as sent', r[F.sent]); }
    field(box, 'response', r[F.response]);
    field(box, 'generation error', r[F.error]);
    field(box, 'back-translation', r[F.back]);
    box.appendChild(verdictTable(r));
    return box;
  }
  function itemRow(i, tbody, cols) {
    var r = R[i], tr = el('tr', 'item');
    tr.setAttribute('data-row', String(i));
    tr.appendChild(el('td', '', r[F.prompt_id]));
    tr.appendChild(el('td', '', L.locale[r[F.locale]]));
    tr.appendChild(el('td', '', L.category[r[F.category]]));
    tr.appendChild(el('td', '', L.source_category[r[F.source_category]]));
    tr.appendChild(el('td', '', L.attack[r[F.attack]] + ' / ' + L.variant[r[F.variant]]));
    tr.appendChild(el('td', '', L.model_name[r[F.model_name]]));
    tr.appendChild(labCell(r[F.label]));
    var text = r[F.error] ? 'error: ' + r[F.error] : (r[F.response] || '');
    tr.appendChild(el('td', '', text.length > 160 ? text.slice(0, 160) + ' ...' : text));
    tbody.appendChild(tr);
    if (state.open === i) {
      tr.className = 'item open';
      var d = el('tr', 'detail'), td = el('td');
      td.colSpan = cols; td.appendChild(detail(i)); d.appendChild(td); tbody.appendChild(d);
    }
    tr.addEventListener('click', function () { state.open = state.open === i ? -1 : i; render(); });
  }
  function pager(box, page, total, go) {
    while (box.firstChild) { box.removeChild(box.firstChild); }
    var pages = Math.max(1, Math.ceil(total / PAGE));
    var prev = el('button', '', 'previous'), next = el('button', '', 'next');
    prev.disabled = page <= 0; next.disabled = page >= pages - 1;
    prev.addEventListener('click', function () { go(page - 1); });
    next.addEventListener('click', function () { go(page + 1); });
    box.appendChild(prev);
    box.appendChild(el('span', 'count', total ? (page * PAGE + 1) + '-' + Math.min(total, (page + 1) * PAGE) + ' of ' + total : '0 of 0'));
    box.appendChild(next);
  }
  function render() {
    var tbody = q('[data-t=items] tbody');
    while (tbody.firstChild) { tbody.removeChild(tbody.firstChild); }
    var start = state.page * PAGE, list = state.list;
    for (var k = start; k < Math.min(list.length, start + PAGE); k++) { itemRow(list[k], tbody, 8); }
    root.setAttribute('data-shown', String(list.length));
    var counts = {}, order = [];
    list.forEach(function (i) { var k = R[i][F.label]; if (!(k in counts)) { counts[k] = 0; order.push(k); } counts[k]++; });
    order.sort(function (a, b) { return counts[b] - counts[a]; });
    q('[data-counts=items]').textContent = list.length ? 'labels: ' + order.map(function (k) {
      return lab(k) + ' ' + counts[k] + ' (' + (100 * counts[k] / list.length).toFixed(1) + '%)'; }).join(' \u00b7 ') : '';
    pager(q('[data-pager=items]'), state.page, list.length, function (p) { state.page = p; state.open = -1; render(); });
  }
  function pairCells(tr, i) {
    var r = R[i];
    tr.appendChild(labCell(r[F.label]));
    var t = r[F.response] || ''; tr.appendChild(el('td', '', t.length > 120 ? t.slice(0, 120) + ' ...' : t));
  }
  function side(title, i) {
    var r = R[i], col = el('div', 'pair-side');
    col.appendChild(el('h4', '', title + ': ' + lab(r[F.label])));
    if (r[F.sent] !== null) { field(col, 'prompt as sent', r[F.sent]); }
    field(col, 'response', r[F.response]);
    field(col, 'back-translation', r[F.back]);
    col.appendChild(verdictTable(r));
    return col;
  }
  function applyPairs() {
    var loc = q('[data-p=locale]').value, dir = q('[data-p=dir]').value, out = [];
    D.pairs.forEach(function (p, k) {
      if (loc !== '' && p[0] !== +loc) { return; }
      if (dir !== '' && p[1] !== +dir) { return; }
      out.push(k);
    });
    state.plist = out; state.ppage = 0; state.popen = -1;
    renderPairs();
  }
  function renderPairs() {
    var tbody = q('[data-t=pairs] tbody');
    while (tbody.firstChild) { tbody.removeChild(tbody.firstChild); }
    var start = state.ppage * PAGE, list = state.plist;
    for (var k = start; k < Math.min(list.length, start + PAGE); k++) {
      (function (pk) {
        var p = D.pairs[pk], en = R[p[2]], tr = el('tr', 'item pair');
        tr.setAttribute('data-pair', String(pk));
        tr.appendChild(el('td', '', L.locale[p[0]]));
        tr.appendChild(el('td', '', en[F.prompt_id]));
        tr.appendChild(el('td', '', L.category[en[F.category]]));
        tr.appendChild(el('td', '', p[1] === 0 ? 'English refused, locale did not' : 'locale refused, English did not'));
        pairCells(tr, p[2]); pairCells(tr, p[3]);
        tbody.appendChild(tr);
        tr.addEventListener('click', function () { state.popen = state.popen === pk ? -1 : pk; renderPairs(); });
        if (state.popen === pk) {
          tr.className = 'item pair open';
          var d = el('tr', 'detail'), td = el('td'), box = el('div', 'side');
          td.colSpan = 8;
          field(td, 'English prompt', D.english[en[F.english]]);
          box.appendChild(side('English (' + L.locale[en[F.locale]] + ')', p[2]));
          box.appendChild(side(L.locale[p[0]], p[3]));
          td.appendChild(box); d.appendChild(td); tbody.appendChild(d);
        }
      })(list[k]);
    }
    root.setAttribute('data-pairs-shown', String(list.length));
    pager(q('[data-pager=pairs]'), state.ppage, list.length, function (p) { state.ppage = p; state.popen = -1; renderPairs(); });
  }
  function tab(name) {
    root.querySelectorAll('.tabs button').forEach(function (b) {
      var on = b.getAttribute('data-tab') === name;
      b.setAttribute('aria-pressed', on ? 'true' : 'false');
      q('[data-panel=' + b.getAttribute('data-tab') + ']').hidden = !on;
    });
  }
  root.querySelectorAll('.tabs button').forEach(function (b) {
    b.addEventListener('click', function () { tab(b.getAttribute('data-tab')); });
  });
  root.querySelectorAll('select[data-f]').forEach(function (s) { s.addEventListener('change', applyFilters); });
  root.querySelectorAll('select[data-p]').forEach(function (s) { s.addEventListener('change', applyPairs); });
  var timer = null;
  q('[data-f=search]').addEventListener('input', function () {
    if (timer) { clearTimeout(timer); }
    timer = setTimeout(applyFilters, 150);
  });
  tab('items');
  applyFilters();
  applyPairs();
  root.setAttribute('data-ready', '1');
  root.setAttribute('data-ready-ms', String(Math.round(performance.now())));
})();
""".strip()


# Column widths (percent): the answer gets the room, short codes little.
ITEM_COLS = "<colgroup>" + "".join(f'<col style="width:{w}%">' for w in (12, 5, 11, 12, 9, 8, 10, 33)) + "</colgroup>"
PAIR_COLS = "<colgroup>" + "".join(f'<col style="width:{w}%">' for w in (5, 12, 10, 11, 8, 23, 8, 23)) + "</colgroup>"


def explorer_script_hash() -> str:
    """The CSP source expression that admits exactly the explorer script."""
    digest = hashlib.sha256(EXPLORER_SCRIPT.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


class _Index:
    """Strings stored once: ``index(value)`` gives its position in ``values``."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self._pos: dict[str, int] = {}

    def index(self, value: str | None) -> int:
        """Position of ``value`` (added on first sight); -1 for None."""
        if value is None:
            return -1
        if value not in self._pos:
            self._pos[value] = len(self.values)
            self.values.append(value)
        return self._pos[value]


def flipped_pairs(primary: pl.DataFrame) -> pl.DataFrame:
    """The discordant pairs behind each locale's refusal McNemar test, with both response keys.

    Pairing follows ``aggregate.paired_frame``: same model, base set, base prompt, attack and
    variant; both primary verdicts valid; the locale's translation not rejected.
    """
    schema = {"locale": pl.Utf8, "direction": pl.Int64, "en_key": pl.Utf8, "locale_key": pl.Utf8}
    if primary.is_empty():
        return pl.DataFrame(schema=schema)
    valid = primary.filter(pl.col("invalid") == 0)
    en = valid.filter(pl.col("locale") == ENGLISH).select(
        *PAIR_KEY, pl.col("response_key").alias("en_key"), pl.col("refusal").alias("refusal_en")
    )
    other = valid.filter((pl.col("locale") != ENGLISH) & pl.col("tr_accepted").fill_null(True))
    joined = other.join(en, on=PAIR_KEY, how="inner").filter(pl.col("refusal") != pl.col("refusal_en"))
    return (
        joined.select(
            "locale",
            pl.when(pl.col("refusal_en") == 1).then(EN_REFUSED).otherwise(LOCALE_REFUSED).cast(pl.Int64).alias("direction"),
            "en_key",
            pl.col("response_key").alias("locale_key"),
        )
        .sort("locale", "direction", "en_key")
    )


def _by_response(items: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Runs of consecutive item rows of one response (``item_rows`` keeps a response's rows together)."""
    group: list[dict[str, Any]] = []
    for row in items:
        if group and row["response_key"] != group[0]["response_key"]:
            yield group
            group = []
        group.append(row)
    if group:
        yield group


def explorer_payload(data: "ReportData", items: list[dict[str, Any]]) -> dict[str, Any]:
    """The explorer's JSON: one record per response (``fields`` names the positions), lookups, pairs.

    ``items`` are ``xsafety.export.item_rows`` (one dict per response x judge x mode).
    """
    lookups = {name: _Index() for name in LOOKUPS}
    english = _Index()
    rows: list[list[Any]] = []
    position: dict[str, int] = {}
    fields = ["prompt_id", "locale", "category", "macro", "source_category", "attack", "variant", "model_name",
              "english", "sent", "response", "back", "error", "label", "verdicts"]
    fpos = {name: i for i, name in enumerate(fields)}
    for part in _by_response(items):
        first = part[0]
        verdicts = []
        label = -1
        for v in part:
            if v["judge"] is None:
                continue
            verdicts.append([lookups["judge"].index(v["judge"]), lookups["mode"].index(v["mode"]),
                             lookups["label"].index(v["label"]), v["reason"] or ""])
            if v["primary"]:
                label = lookups["label"].index(v["label"])
        sent = first["prompt_sent"]
        en_prompt = first["english_prompt"] or ""
        position[first["response_key"]] = len(rows)
        rows.append([
            first["prompt_id"],
            *(lookups[name].index(first[name] or "") for name in
              ("locale", "category", "macro", "source_category", "attack", "variant", "model_name")),
            english.index(en_prompt),
            # The prompt as sent is left out where it is the English prompt itself (most English rows).
            None if not sent or sent == en_prompt else sent,
            first["response_text"] or "",
            first["back_translation"],
            first["response_error"],
            label,
            verdicts,
        ])
    pairs = []
    pair_locales: set[int] = set()
    for p in flipped_pairs(data.primary).iter_rows(named=True):
        if p["en_key"] in position and p["locale_key"] in position:
            loc = lookups["locale"].index(p["locale"])
            pair_locales.add(loc)
            pairs.append([loc, p["direction"], position[p["en_key"]], position[p["locale_key"]]])
    lookup_values = {name: idx.values for name, idx in lookups.items()}
    # Signatures are long ("refusal-lexicon|compliance:safe|..."): rows show a short name, the
    # full signature is the cell's tooltip.
    lookup_values["judge_sig"] = lookup_values["judge"]
    lookup_values["judge"] = judge_names(lookup_values["judge"])
    return {
        "fields": fpos,
        "lookups": lookup_values,
        "english": english.values,
        "rows": rows,
        "pairs": pairs,
        "pair_locales": sorted(pair_locales),
        "page_size": PAGE_SIZE,
    }


def judge_names(signatures: list[str]) -> list[str]:
    """Short display names of judge signatures: the kind, with a signature hash when two share it."""
    from xsafety.records import stable_hash

    kinds = [sig.split("|", 1)[0] for sig in signatures]
    return [k if kinds.count(k) == 1 else f"{k} [{stable_hash(sig, length=6)}]" for k, sig in zip(kinds, signatures)]


def embed_json(payload: Any) -> str:
    """JSON safe inside a ``<script type="application/json">`` block: no ``<``, ``>`` or ``&`` raw."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_explorer(data: "ReportData", items: list[dict[str, Any]] | None = None) -> str:
    """The explorer section of ``index.html``: markup, embedded data and the fixed script."""
    if items is None:
        from xsafety.export import item_rows

        items = item_rows(data.run)
    payload = explorer_payload(data, items)
    n = len(payload["rows"])
    selects = "".join(
        f'<label>{escape(name)} <select data-f="{escape(name)}"></select></label>'
        for name in ("locale", "category", "label", "model", "attack", "variant")
    )
    head = "".join(f"<th>{escape(h)}</th>" for h in
                   ("prompt", "locale", "ALERT category", "source category", "attack / variant", "model", "label", "response"))
    pair_head = "".join(f"<th>{escape(h)}</th>" for h in
                        ("locale", "prompt", "ALERT category", "flip", "en label", "en response", "locale label", "locale response"))
    judge = judge_names([data.run.primary_judge])[0] if data.run.primary_judge else "none"
    return "\n".join([
        f"<style>{EXPLORER_STYLE}</style>",
        '<section id="xs-explorer">',
        '<h2 id="items">Items</h2>',
        f'<p class="meta">Every response of the run ({n}), one row each. The label is the primary judge\'s '
        f"(<code title=\"{escape(data.run.primary_judge or '')}\">{escape(judge)}</code>, native); click a row for the English prompt, the prompt as sent, the "
        "response, its back-translation and every judge's label with its reason. "
        + ("" if data.harm_judged else f"The primary judge detects refusals only: an answer it did not see refused "
           f"reads \"{COMPLIED_NOT_JUDGED}\", never \"safe\". ")
        + "Flipped pairs are the discordant pairs behind each locale's refusal McNemar test.</p>",
        '<div class="tabs bar"><button type="button" data-tab="items">All responses</button>'
        '<button type="button" data-tab="pairs">Flipped pairs</button></div>',
        '<div data-panel="items">',
        f'<div class="bar">{selects}<label>search <input type="search" data-f="search" '
        'placeholder="text in prompt, response, reason"></label></div>',
        '<div class="bar"><span data-pager="items" class="bar"></span><span class="meta" data-counts="items"></span></div>',
        f'<table data-t="items">{ITEM_COLS}<thead><tr>{head}</tr></thead><tbody></tbody></table>',
        "</div>",
        '<div data-panel="pairs" hidden>',
        '<div class="bar"><label>locale <select data-p="locale"></select></label>'
        '<label>flip <select data-p="dir"><option value="">both directions</option>'
        f'<option value="{EN_REFUSED}">English refused, locale did not</option>'
        f'<option value="{LOCALE_REFUSED}">locale refused, English did not</option></select></label></div>',
        '<div class="bar" data-pager="pairs"></div>',
        f'<table data-t="pairs">{PAIR_COLS}<thead><tr>{pair_head}</tr></thead><tbody></tbody></table>',
        "</div>",
        f'<script type="application/json" id="{DATA_ID}">{embed_json(payload)}</script>',
        "</section>",
    ])
