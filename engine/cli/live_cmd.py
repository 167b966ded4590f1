"""``engine live [STRATEGY.yaml] --testnet``: run a strategy graph live, one closed bar at a time."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from engine.cli.common import ResultsOpt, SetOpt, SymbolsOpt, console, guarded

if TYPE_CHECKING:
    from engine.live import LiveResult
    from engine.live.options import RunStart

DEFAULT_STRATEGY = "strategies/ensemble.yaml"

StrategyArg = typer.Argument(DEFAULT_STRATEGY, help="Strategy YAML file (default: the shipped ensemble).")
TestnetOpt = typer.Option(False, "--testnet", help="Trade on Binance's USD-M futures testnet.")
ProductionOpt = typer.Option(
    False, "--production", help="Trade on Binance's production USD-M venue (real money; never a default).")
UrlOpt = typer.Option(None, "--url", help="REST base URL of a Binance-compatible server.")
WsUrlOpt = typer.Option(None, "--ws-url", help="Websocket base URL (market streams).")
MaxBarsOpt = typer.Option(None, "--max-bars", min=1, help="Stop after N closed bars.")
SinceOpt = typer.Option(
    None, "--since",
    help="First warm-up bar (UTC, e.g. 2024-01-01): read history from there. ML strategies "
    "anchor their walk-forward folds there (a backtest's data.start reuses its models).")
KeyFileOpt = typer.Option(
    None, "--key-file",
    help="File with the API key and secret, readable by its owner only (chmod 600); "
    "else BINANCE_API_KEY/BINANCE_API_SECRET.")
RunIdOpt = typer.Option(None, "--run-id", help="Resume this run.")
NewRunOpt = typer.Option(
    False, "--new-run", help="Start a new run even if the last run of this strategy died.")
FlattenOpt = typer.Option(
    False, "--flatten-on-exit", help="On SIGINT/SIGTERM also close every position and cancel every order.")
MetricsPortOpt = typer.Option(
    9108, "--metrics-port", min=0, max=65535, help="Port of /metrics and /health (0: off).")
MetricsHostOpt = typer.Option(
    "127.0.0.1", "--metrics-host", help="Address /metrics and /health bind to (give another explicitly).")
DashPortOpt = typer.Option(
    8787, "--dashboard-port", min=0, max=65535,
    help="Port of the live dashboard page and its /ws (0: off; the --metrics-port: one server).")
DashHostOpt = typer.Option(
    "127.0.0.1", "--dashboard-host", help="Address the dashboard binds to (non-loopback needs a token).")
DashTokenOpt = typer.Option(
    None, "--dashboard-token", envvar="ENGINE_DASHBOARD_TOKEN",
    help="Token the dashboard page and socket require (open http://HOST:PORT/?token=...).")
BarGraceOpt = typer.Option(
    2.0, "--bar-grace", min=0.0, help="Seconds a bar waits for a late symbol's kline before REST.")
StreamTimeoutOpt = typer.Option(
    300.0, "--stream-timeout", min=1.0,
    help="Seconds the kline stream may stay down before the run stops (exit 1).")


def register(app: typer.Typer) -> None:
    app.command("live")(live)


@guarded
def live(
    strategy: str = StrategyArg, testnet: bool = TestnetOpt, production: bool = ProductionOpt,
    url: str | None = UrlOpt, ws_url: str | None = WsUrlOpt, symbols: str | None = SymbolsOpt,
    set_: list[str] | None = SetOpt, results: str | None = ResultsOpt,
    max_bars: int | None = MaxBarsOpt, since: str | None = SinceOpt,
    key_file: str | None = KeyFileOpt, run_id: str | None = RunIdOpt, new_run: bool = NewRunOpt,
    flatten_on_exit: bool = FlattenOpt, metrics_port: int = MetricsPortOpt,
    metrics_host: str = MetricsHostOpt, bar_grace: float = BarGraceOpt,
    stream_timeout: float = StreamTimeoutOpt, dashboard_port: int = DashPortOpt,
    dashboard_host: str = DashHostOpt, dashboard_token: str | None = DashTokenOpt,
) -> None:
    """Trade a strategy live: warm up from REST, then act on each closed websocket kline.

    Decisions, orders (intent logged before sending), equity and events go to the run log
    (mode 'live'); `engine query` shows them beside backtests. A run whose process died is
    resumed by the next start (--new-run: a fresh one). Ctrl-C or SIGTERM stops cleanly: the
    stop and target orders of held positions stay at the exchange (--flatten-on-exit closes
    everything); a second signal exits at once.
    """
    import dataclasses

    from engine.live import LiveOptions, read_keys, run_live
    from engine.live.decider import check_live_supported
    from engine.strategy import load_strategy
    from engine.timeutil import parse_time

    syms = [s.strip().upper() for s in symbols.split(",") if s.strip()] if symbols else None
    graph = load_strategy(strategy, overrides=list(set_ or []), symbols=syms, venue_symbols=True)
    check_live_supported(graph)
    opts = LiveOptions(url=url, ws_url=ws_url, testnet=testnet, production=production, results=results,
                       max_bars=max_bars, since=parse_time(since, name="--since"), run_id=run_id,
                       new_run=new_run, flatten_on_exit=flatten_on_exit, metrics_host=metrics_host,
                       metrics_port=metrics_port or None, bar_grace_s=bar_grace,
                       stream_timeout_s=stream_timeout, dashboard_host=dashboard_host,
                       dashboard_port=dashboard_port or None, dashboard_token=dashboard_token)
    opts.endpoints()
    key, secret = read_keys(key_file)
    res = run_live(graph, dataclasses.replace(opts, key=key, secret=secret), on_start=_started,
                   install_signals=True)
    _ended(res)


def _started(s: RunStart) -> None:
    what = "resumed" if s.resumed else "started"
    console.print(f"live run [bold]{s.run_id}[/] {what}: {s.reason}", highlight=False, soft_wrap=True)
    if s.metrics_url:
        console.print(f"metrics: {s.metrics_url}/metrics, health: {s.metrics_url}/health",
                      highlight=False, soft_wrap=True)
    if s.dashboard_url:
        console.print(f"dashboard: {s.dashboard_url}/", highlight=False, soft_wrap=True)


def _ended(res: LiveResult) -> None:
    if not res.run_id:
        console.print("live: stopped before a run began", highlight=False)
        return
    console.print(f"live run [bold]{res.run_id}[/]: {res.status}, {res.bars} bar(s), {res.orders} "
                  f"order(s), equity {res.equity:,.2f}", highlight=False, soft_wrap=True)
    for sym, qty in res.positions.items():
        kept = ", ".join(f"{leg} at {price:g}" for leg, price in res.kept.get(sym, []))
        console.print(f"{sym}: position {qty:g} held; "
                      + (f"its {kept} kept at the exchange" if kept else "no protective order"),
                      highlight=False, soft_wrap=True)
