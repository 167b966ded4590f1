"""``engine live STRATEGY.yaml``: run a strategy graph live, one closed bar at a time."""

from __future__ import annotations

import typer

from engine.cli.common import ResultsOpt, SymbolsOpt, console, guarded


def register(app: typer.Typer) -> None:
    app.command("live")(live)


@guarded
def live(
    strategy: str = typer.Argument(..., help="Strategy YAML file, e.g. strategies/ema_cross.yaml."),
    testnet: bool = typer.Option(False, "--testnet", help="Trade on Binance's USD-M futures testnet."),
    url: str | None = typer.Option(None, "--url", help="REST base URL of a Binance-compatible server."),
    ws_url: str | None = typer.Option(None, "--ws-url", help="Websocket base URL (market streams)."),
    symbols: str | None = SymbolsOpt,
    set_: list[str] | None = typer.Option(None, "--set", help="Override a param or dotted key (k=v). Repeatable."),
    results: str | None = ResultsOpt,
    max_bars: int | None = typer.Option(None, "--max-bars", min=1, help="Stop after N closed bars."),
    since: str | None = typer.Option(
        None, "--since",
        help="First warm-up bar (UTC, e.g. 2024-01-01): read history from there. ML strategies "
        "anchor their walk-forward folds there (a backtest's data.start reuses its models).",
    ),
    key_file: str | None = typer.Option(
        None, "--key-file", help="File with the API key and secret (else BINANCE_API_KEY/BINANCE_API_SECRET)."
    ),
) -> None:
    """Trade a strategy live: warm up from REST, then act on each closed websocket kline.

    Decisions, orders (intent logged before sending), equity and events go to the run log
    (mode 'live'); `engine query` shows them beside backtests. Ctrl-C stops cleanly.
    """
    from engine.live import LiveOptions, read_keys, run_live
    from engine.strategy import load_strategy

    syms = [s.strip().upper() for s in symbols.split(",") if s.strip()] if symbols else None
    graph = load_strategy(strategy, overrides=list(set_ or []), symbols=syms)
    from engine.live.decider import check_live_supported

    check_live_supported(graph)
    since_ms = None
    if since is not None:
        from engine.timeutil import parse_time

        since_ms = parse_time(since, name="--since")
    opts = LiveOptions(url=url, ws_url=ws_url, testnet=testnet, results=results, max_bars=max_bars,
                       since=since_ms)
    opts.endpoints()
    key, secret = read_keys(key_file)
    import dataclasses

    opts = dataclasses.replace(opts, key=key, secret=secret)
    res = run_live(graph, opts, install_signals=True)
    console.print(
        f"live run [bold]{res.run_id}[/]: {res.status}, {res.bars} bar(s), {res.orders} order(s), "
        f"equity {res.equity:,.2f}",
        highlight=False,
    )
