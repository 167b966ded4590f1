"""A local Binance USD-M exchange (REST + websockets) replaying the store: `engine sim-exchange`.

A test double for a venue these machines cannot reach; its accounting runs on engine.sim's
kernels. Live mode is pointed at it by URL, like any Binance-compatible server.
"""
