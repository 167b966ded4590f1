"""The ``engine`` command line.

Each subcommand lives in its own module under ``engine.cli`` and exposes
``register(app)``. Command modules import only typer and rich at module level; heavy
libraries (polars, numba, lightgbm, ccxt, ...) are imported inside the command bodies so
that ``engine --help`` answers instantly.

Exit codes: 0 ok, 1 a problem found in the data or the run, 2 a usage or config error.
"""

from __future__ import annotations

import importlib
import sys

import typer

# Subcommand modules, in the order their commands are listed by ``engine --help``.
COMMAND_MODULES = (
    "engine.cli.data_cmd",
    "engine.cli.features_cmd",
    "engine.cli.validate_cmd",
    "engine.cli.backtest_cmd",
    "engine.cli.sweep_cmd",
    "engine.cli.query_cmd",
    "engine.cli.report_cmd",
    "engine.cli.dashboard_cmd",
    "engine.cli.sim_exchange_cmd",
    "engine.cli.serve_model_cmd",
    "engine.cli.live_cmd",
    "engine.cli.parity_cmd",
    "engine.cli.lookahead_cmd",
)

app = typer.Typer(
    name="engine",
    help="Trading engine for Binance USD-M perpetual futures: one strategy graph for backtest and live.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app and turn EngineErrors into clean exits."""
    from engine.errors import EngineError

    try:
        app(args=argv, standalone_mode=True)
    except EngineError as err:  # raised outside a command's own handler
        from engine.cli.common import print_error

        print_error(err)
        sys.exit(err.exit_code)
