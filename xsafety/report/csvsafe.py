"""CSV tables a spreadsheet can open without running anything in them.

A spreadsheet runs a cell that starts with ``=``, ``+``, ``-`` or ``@`` (and, in some, a tab or a
carriage return) as a formula: "CSV injection". Text cells of every CSV the report writes come
from users and models (prompt ids, set and model names, categories, answers), so a text cell
starting with one of those gets a leading apostrophe, which spreadsheets show as text. Numeric
columns are left alone: ``-1.5`` is a number, not a formula. Parquet files keep the data as is.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")
FORMULA_START = "^[" + "".join(re.escape(c) for c in FORMULA_PREFIXES) + "]"


def inert_cell(value: object) -> object:
    """One cell: text that starts like a formula gets a leading ``'``; anything else is unchanged."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_PREFIXES) else value


def neutralised(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` with every text cell that a spreadsheet would run as a formula prefixed by ``'``."""
    text_cols = [name for name, dtype in df.schema.items() if dtype == pl.Utf8]
    if not text_cols:
        return df
    return df.with_columns(
        pl.when(pl.col(c).str.contains(FORMULA_START)).then(pl.lit("'") + pl.col(c)).otherwise(pl.col(c)).alias(c)
        for c in text_cols
    )


def write_csv(df: pl.DataFrame, path: str | Path) -> Path:
    """Write ``df`` as CSV with formula cells neutralised; returns the path."""
    neutralised(df).write_csv(path)
    return Path(path)
