"""The market-data store: import, download, load and check Binance data (Hive-partitioned Parquet).

Public API::

    load_candles(symbol, interval, *, start=None, end=None, store=None, market="usdm")
    load_funding(symbol, *, start=None, end=None, store=None)
    load_mark_price(symbol, interval="8h", *, start=None, end=None, store=None)
    stored_stamp(symbols, interval, *, market="usdm", funding=False, store=None)
    import_paths(paths, *, store=None, market=None, symbol=None, interval=None)
    download(...)            # engine.data.download
    check_store(...)         # engine.data.check
"""

from engine.data.api import load_candles, load_funding, load_mark_price, stored_stamp
from engine.data.importer import ImportReport, import_paths
from engine.data.schema import Dataset
from engine.data.store import Store

__all__ = [
    "Dataset",
    "ImportReport",
    "Store",
    "import_paths",
    "load_candles",
    "load_funding",
    "load_mark_price",
    "stored_stamp",
]
