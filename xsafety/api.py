"""The Python entry point for notebooks: a run's items and rates as polars frames.

    from xsafety.api import load_items, load_rates

    items = load_items("xsafety-runs/default")      # one row per response x judge x mode
    primary = items.filter(primary=True)            # the rows the report's numbers count
    rates = load_rates("xsafety-runs/default")      # per locale: rates, gaps to English, CIs, p

The item columns are documented in ``xsafety.export`` (``ITEM_SCHEMA``); ``xsafety export``
writes the same rows to Parquet, JSONL or CSV.
"""

from xsafety.export import ITEM_SCHEMA, load_items, load_rates

__all__ = ["ITEM_SCHEMA", "load_items", "load_rates"]
