"""The HTTP side of ``engine serve-model``: an aiohttp application on one asyncio loop.

Routes: ``POST /predict``, ``POST /retrain``, ``GET /health``, ``GET /metrics``. A body is
read once (refused with 413 above ``max_body`` bytes, before reading when the client
announces its length), validated by pydantic straight from the JSON bytes, and answered
as JSON (orjson; NaN as null). A small body is predicted on the loop (a 30-feature row
takes microseconds); a large one, and every retrain, in a worker thread, so ``/health`` and
``/metrics`` answer while a retrain fits. Retrains run one at a time.

Metrics (Prometheus text format, the server's own ``prometheus_client`` registry):
``predictions_total{version,source}`` (probabilities answered, ``source`` rows or candles),
``prediction_latency_seconds`` (a successful ``/predict``, from its headers to its answer),
``prediction_errors_total{endpoint,kind}`` (``invalid_body`` 422, ``too_large`` 413,
``unknown_version`` 404, ``not_retrainable`` 409, ``no_route`` 404/405, ``model_error``
500) and ``retrains_total``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import ValidationError

from engine.ml.serve.bodies import PredictBody, RequestError, RetrainBody, invalid_body
from engine.ml.serve.service import ModelService

#: the server's routes (listed in a 404 answer)
ROUTES = ("POST /predict", "POST /retrain", "GET /health", "GET /metrics")
#: default largest request body: 32 MiB (about 1.5 million feature values)
DEFAULT_MAX_BODY = 32 << 20
#: bodies larger than this are validated and predicted in a worker thread
INLINE_BYTES = 256 << 10
#: a prediction takes tens of microseconds to milliseconds: fine buckets there
LATENCY_BUCKETS = (
    0.0001,
    0.0002,
    0.0003,
    0.0004,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class ServeMetrics:
    """The server's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.predictions = Counter(
            "predictions_total",
            "Probabilities answered, by model version and input (rows or candles)",
            ["version", "source"],
            registry=r,
        )
        self.latency = Histogram(
            "prediction_latency_seconds",
            "A successful POST /predict: request headers received -> answer ready",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "prediction_errors_total",
            "Requests refused or failed, by endpoint and kind",
            ["endpoint", "kind"],
            registry=r,
        )
        self.retrains = Counter("retrains_total", "Retrains that answered a version", registry=r)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


@dataclass
class _State:
    service: ModelService
    metrics: ServeMetrics
    max_body: int
    delay_s: float
    retrain_lock: asyncio.Lock


STATE = web.AppKey("serve_model", _State)


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY),
        status=status,
        content_type="application/json",
    )


def _refuse(st: _State, endpoint: str, err: RequestError) -> web.Response:
    st.metrics.errors.labels(endpoint, err.kind).inc()
    return _json(err.answer(), err.status)


async def _body(request: web.Request, limit: int) -> bytes:
    """The request body; 413 above ``limit`` bytes."""
    n = request.content_length
    if n is None or n <= limit:
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            n = None
    got = "more" if n is None else f"{n:,} bytes"
    raise RequestError(
        413,
        "too_large",
        [
            {
                "field": "body",
                "message": (
                    f"{got}; this server takes at most {limit:,} bytes per request (--max-body-mb): "
                    "send fewer rows per request"
                ),
            }
        ],
    )


def _run_predict(service: ModelService, raw: bytes) -> dict[str, Any]:
    try:
        body = PredictBody.model_validate_json(raw)
    except ValidationError as exc:
        raise invalid_body(exc) from None
    out = service.predict(body)
    out["_source"] = "candles" if body.candles is not None else "rows"
    return out


def _run_retrain(service: ModelService, raw: bytes) -> dict[str, Any]:
    try:
        body = RetrainBody.model_validate_json(raw)
    except ValidationError as exc:
        raise invalid_body(exc) from None
    return service.retrain(body)


async def _predict(request: web.Request) -> web.Response:
    st = request.app[STATE]
    t0 = time.perf_counter()
    try:
        raw = await _body(request, st.max_body)
        if st.delay_s:
            await asyncio.sleep(st.delay_s)
        if len(raw) > INLINE_BYTES:
            out = await asyncio.to_thread(_run_predict, st.service, raw)
        else:
            out = _run_predict(st.service, raw)
    except RequestError as err:
        return _refuse(st, "/predict", err)
    except Exception as exc:  # noqa: BLE001 - the model failed: answered, counted, serving on
        return _refuse(st, "/predict", _model_error(exc))
    source = out.pop("_source")
    resp = _json(out)
    st.metrics.latency.observe(time.perf_counter() - t0)
    st.metrics.predictions.labels(out["model_version"], source).inc(len(out["probabilities"]))
    return resp


async def _retrain(request: web.Request) -> web.Response:
    st = request.app[STATE]
    try:
        raw = await _body(request, st.max_body)
        async with st.retrain_lock:
            out = await asyncio.to_thread(_run_retrain, st.service, raw)
    except RequestError as err:
        return _refuse(st, "/retrain", err)
    except Exception as exc:  # noqa: BLE001 - the fit failed: answered, counted, serving on
        return _refuse(st, "/retrain", _model_error(exc))
    st.metrics.retrains.inc()
    return _json(out, 201 if out["created"] else 200)


def _model_error(exc: Exception) -> RequestError:
    msg = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return RequestError(500, "model_error", [{"field": "model", "message": msg}])


async def _health(request: web.Request) -> web.Response:
    return _json(request.app[STATE].service.health())


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[STATE].metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


@web.middleware
async def _no_route(request: web.Request, handler: Any) -> web.StreamResponse:
    """404/405 from the router as JSON listing the routes (counted as ``no_route``)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status not in (404, 405):
            raise
        st = request.app[STATE]
        st.metrics.errors.labels("other", "no_route").inc()
        return _json(
            {"error": f"no route {request.method} {request.path}", "routes": list(ROUTES)},
            exc.status,
        )


def make_app(
    service: ModelService,
    *,
    max_body: int = DEFAULT_MAX_BODY,
    delay_s: float = 0.0,
    metrics: ServeMetrics | None = None,
) -> web.Application:
    """The aiohttp application serving ``service``.

    ``delay_s`` delays every ``/predict`` answer (fault injection for the remote node's
    timeout tests); ``metrics`` defaults to a fresh registry.
    """
    app = web.Application(client_max_size=max_body, middlewares=[_no_route])
    app[STATE] = _State(service, metrics or ServeMetrics(), max_body, delay_s, asyncio.Lock())
    app.router.add_post("/predict", _predict)
    app.router.add_post("/retrain", _retrain)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    return app


async def start(
    app: web.Application, *, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, int]:
    """Listen on ``host:port`` (0: any free port); returns the runner and the bound port."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])


class ServerThread:
    """A server on its own event loop in a daemon thread, for synchronous callers (tests,
    benchmarks). ``start()`` returns the bound port, ``stop()`` shuts it down.

    >>> with ServerThread(service) as server:  # doctest: +SKIP
    ...     url = server.url
    """

    def __init__(
        self, service: ModelService, *, host: str = "127.0.0.1", port: int = 0, **app_options: Any
    ) -> None:
        self.service = service
        self.host = host
        self.port = port
        self._options = app_options
        self.loop = asyncio.new_event_loop()
        self.app: web.Application | None = None
        self._thread = threading.Thread(target=self._run, name="serve-model", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.app = make_app(self.service, **self._options)
            runner, self.port = self.loop.run_until_complete(
                start(self.app, host=self.host, port=self.port)
            )
        except BaseException as err:  # noqa: BLE001 - reported to the starting thread
            self._error = err
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(runner.cleanup())
        self.loop.close()

    def start(self, *, timeout: float = 30.0) -> int:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the model server did not start in time")
        if self._error is not None:
            raise self._error
        return self.port

    def stop(self, *, timeout: float = 10.0) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
