"""A trading engine for Binance USD-M perpetual futures.

One strategy graph (candles -> features -> models -> ensemble -> risk -> orders) runs as a
vectorized backtest and live, one closed bar at a time, through the same step kernels.
Heavy libraries are imported lazily by the modules that need them.
"""

__version__ = "0.1.0"
