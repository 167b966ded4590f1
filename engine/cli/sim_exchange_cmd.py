"""``engine sim-exchange``: a local Binance USD-M futures exchange replaying the store."""

from __future__ import annotations

import typer

from engine.cli.common import StoreOpt, console, guarded
from engine.errors import UsageError
from engine.exchange_sim.config import ExchangeSimSettings
from engine.exchange_sim.faults import FaultSpec
from engine.paths import store_dir
from engine.timeutil import fmt_ms, interval_ms, parse_end, parse_time


def register(app: typer.Typer) -> None:
    app.command("sim-exchange")(sim_exchange_cmd)


@guarded
def sim_exchange_cmd(
    symbols: str = typer.Option("BTCUSDT,ETHUSDT", "--symbols", help="Comma-separated symbols to replay."),
    interval: str = typer.Option("5m", "--interval", help="Bar interval of the replay (the kline stream's)."),
    start: str = typer.Option(..., "--start", help="Market-clock start: ISO date/datetime or ms."),
    end: str | None = typer.Option(None, "--end", help="Last market time (a date means the whole day); default: end of the store."),
    speed: float = typer.Option(300.0, "--speed", help="Market seconds per real second (0 freezes the clock)."),
    port: int = typer.Option(8900, "--port", help="TCP port (0 picks a free one)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind."),
    api_key: str | None = typer.Option(None, "--api-key", help="API key clients must send (default $BINANCE_API_KEY)."),
    api_secret: str | None = typer.Option(
        None, "--api-secret", help="HMAC secret (default $BINANCE_API_SECRET).", show_default=False
    ),
    balance: float = typer.Option(10_000.0, "--balance", help="Starting USDT wallet."),
    faults: str | None = typer.Option(
        None, "--faults", help="Faults to inject, e.g. ws_drop=30s,http_5xx=0.1,http_429_burst=60s,latency=200ms,malformed=0.01"
    ),
    fault_log: str | None = typer.Option(None, "--fault-log", help="Append every injected fault to this JSON-lines file."),
    seed: int = typer.Option(0, "--seed", help="Seed of the fault RNG."),
    slippage_bps: float = typer.Option(0.0, "--slippage-bps", help="Adverse move of market fills, basis points."),
    taker_fee: float = typer.Option(0.0005, "--taker-fee", help="Taker commission rate."),
    maker_fee: float = typer.Option(0.0002, "--maker-fee", help="Maker commission rate."),
    substeps: int = typer.Option(4, "--substeps", help="Kline updates per bar when no 1m data refines it."),
    weight_limit: int = typer.Option(2400, "--weight-limit", help="REQUEST_WEIGHT budget per minute per IP."),
    orders_10s: int = typer.Option(300, "--orders-10s", help="ORDERS budget per 10 s per key."),
    orders_1m: int = typer.Option(1200, "--orders-1m", help="ORDERS budget per minute per key."),
    legacy_ws: bool = typer.Option(
        False, "--legacy-ws",
        help="Also serve the websocket paths Binance retired on 2026-04-23 (/ws, /stream); refused (404) by default.",
    ),
    store: str | None = StoreOpt,
) -> None:
    """Replay stored candles as a Binance USD-M futures exchange (REST + websockets, one port).

    Point ccxt (engine.binance.make_ccxt), the official Binance SDK or live mode at the printed
    URLs. One clock: /fapi/v1/time, order and event times are the replay's market clock (bars
    keep their historical times); a signed request may carry the wall clock or a clock synced
    to /fapi/v1/time.
    """
    import asyncio
    import os
    from pathlib import Path

    syms, start_ms, end_ms = _check_options(
        symbols, interval, start, end, speed=speed, port=port, limits=(weight_limit, orders_10s, orders_1m),
        substeps=substeps,
    )
    key = api_key or os.environ.get("BINANCE_API_KEY", "")
    secret = api_secret or os.environ.get("BINANCE_API_SECRET", "")
    if not key or not secret:
        raise UsageError(
            "no API key/secret for the simulator",
            hint="pass --api-key and --api-secret, or set BINANCE_API_KEY and BINANCE_API_SECRET",
        )
    config = ExchangeSimSettings(
        symbols=syms, interval=interval, start_ms=start_ms, end_ms=end_ms, speed=speed, host=host, port=port,
        api_key=key, api_secret=secret, balance=balance, faults=FaultSpec.parse(faults), seed=seed,
        store=str(store_dir(store)), substeps=substeps, slippage_bps=slippage_bps, taker_fee=taker_fee,
        maker_fee=maker_fee, fault_log=Path(fault_log) if fault_log else None, weight_limit=weight_limit,
        orders_10s=orders_10s, orders_1m=orders_1m, legacy_ws=legacy_ws,
    )
    asyncio.run(_serve(config, faults))


def _check_options(
    symbols: str, interval: str, start: str, end: str | None, *, speed: float, port: int,
    limits: tuple[int, int, int], substeps: int,
) -> tuple[tuple[str, ...], int, int | None]:
    """Validate the options at the door: (symbols, start ms, end ms or None)."""
    syms = tuple(s.strip().upper() for s in symbols.split(",") if s.strip())
    if not syms:
        raise UsageError("--symbols: no symbol given", hint="for example --symbols BTCUSDT,ETHUSDT")
    interval_ms(interval)
    start_ms = parse_time(start, name="--start")
    assert start_ms is not None
    end_ms = parse_end(end, name="--end")
    if end_ms is not None and end_ms <= start_ms:
        raise UsageError(f"--end {end} is not after --start {start}", hint="give an --end later than --start")
    if speed < 0:
        raise UsageError(f"--speed: must be >= 0, got {speed}", hint="for example --speed 300")
    if not 0 <= port <= 65535:
        raise UsageError(f"--port: {port} is not a TCP port", hint="use 1-65535, or 0 for any free port")
    if min(limits) < 1:
        raise UsageError("--weight-limit/--orders-10s/--orders-1m: must be >= 1", hint="for example --orders-10s 300")
    if substeps < 1:
        raise UsageError(f"--substeps: must be >= 1, got {substeps}", hint="for example --substeps 4")
    return syms, start_ms, end_ms


async def _serve(config: ExchangeSimSettings, faults: str | None) -> None:
    """Start the simulator, print where it listens, serve until SIGINT/SIGTERM."""
    import asyncio
    import signal

    from engine.exchange_sim.server import SimServer  # aiohttp, numpy: not at `engine --help`

    server = SimServer(config)
    try:
        bound = await server.start()
    except OSError as err:
        raise UsageError(f"cannot listen on {config.host}:{config.port}: {err.strerror}",
                         hint="choose another --port") from None
    for note in server.notices:
        console.print(f"[dim]{note}[/]", highlight=False)
    host = config.host
    base = f"http://{host}:{bound}"
    console.print(f"REST       {base}/fapi/v1  (v2, v3 alike)", highlight=False)
    ws = f"ws://{host}:{bound}"
    console.print(f"websocket  {ws}/market/stream?streams=a/b  (klines, mark price, tickers)", highlight=False)
    console.print(f"           {ws}/public/stream?streams=a/b  (book ticker)", highlight=False)
    console.print(f"           {ws}/private/ws?listenKey=<key>  (user data)", highlight=False)
    if config.legacy_ws:
        console.print(f"           {ws}/ws/<stream>  {ws}/stream?streams=a/b  (legacy, --legacy-ws)", highlight=False)
    console.print(f"admin      {base}/sim/state  {base}/sim/faults", highlight=False)
    console.print(
        f"replay     {', '.join(config.symbols)} {config.interval} from {fmt_ms(config.start_ms)} "
        f"to {fmt_ms(server.exchange.end_ms)} at {config.speed:g}x" + (f"; faults: {faults}" if faults else ""),
        highlight=False,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    console.print("stopping", highlight=False)
    await server.stop()
