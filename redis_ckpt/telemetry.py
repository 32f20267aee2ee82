"""OpenTelemetry spans and metrics for acquire, commit and load (the ``[otel]`` extra).

``pip install 'redis-ckpt[otel]'`` (``opentelemetry-api``) and every acquire, commit and load
of a store is a span, and the store records the metrics below, into the global tracer and
meter providers (or the ones given: ``CheckpointStore(..., telemetry=Telemetry(
tracer_provider=..., meter_provider=...))``). Without the package nothing is imported and an
operation costs one ``is None`` test; ``telemetry=False`` turns it off with the package. With the package but no SDK (the
global providers are the API's proxies) nothing is wrapped either, until an SDK sets them
(:meth:`Telemetry.listening`).

It lives at the edge, around the flows: :meth:`Telemetry.observe` wraps a flow in a flow that
times the flow's own steps (encoding, framing, checking replies: ``encode``) apart from the
waits on the server (the write and its WAITAOF/WAIT confirmations: ``server``), and reads
what the commit sends (bytes, codec) from the script's named fields. The core knows nothing
of it; the sync and the asyncio driver run the wrapped flow like any other.

Metrics (attribute ``redis_ckpt.namespace``; no run id: runs are unbounded):

============================================  =========  ==========================================
``redis_ckpt.commit.encode.duration``         s          histogram: the commit's client-side work
``redis_ckpt.commit.server.duration``         s          histogram: write + durability wait
``redis_ckpt.commit.bytes``                   By         counter: frame bytes committed
``redis_ckpt.fenced``                         1          counter: commits rejected by the fence
``redis_ckpt.conflicts``                      1          counter: commits rejected (CONFLICT)
``redis_ckpt.load.fallbacks``                 1          counter: loads that skipped a damaged one
``redis_ckpt.durability_errors``              1          counter: writes applied, not confirmed
``redis_ckpt.retries``                        1          counter: resends after a lost connection
============================================  =========  ==========================================
"""

from __future__ import annotations

import importlib.util
import logging
import time
from typing import Any

from .core.contract import CommitFields
from .core.ops import Deadline, Flow, Pipe, Script, Sleep
from .errors import ConflictError, DurabilityError, ExtraNotInstalledError, FencedError, InvalidOptionError
from .models import Checkpoint, Grant

__all__ = ["Telemetry", "telemetry_for", "available"]

log = logging.getLogger("redis_ckpt")
_AVAILABLE: bool | None = None
_CODECS = {"1": "msgpack"}
#: the API's stand-ins until an SDK sets a global provider (names: the proxies are private)
_NOOP_PROVIDERS = frozenset({"ProxyTracerProvider", "NoOpTracerProvider", "_ProxyMeterProvider", "NoOpMeterProvider"})


def _globals_unset() -> Any:
    """A check that neither global provider of the OpenTelemetry API has been set (nor is
    named by its environment variable, which the API would load), or None when this API
    version keeps them elsewhere (then ``listening`` asks the API itself)."""
    import os

    from opentelemetry import trace
    from opentelemetry.environment_variables import OTEL_PYTHON_METER_PROVIDER, OTEL_PYTHON_TRACER_PROVIDER
    from opentelemetry.metrics import _internal as metrics_globals

    if not (hasattr(trace, "_TRACER_PROVIDER") and hasattr(metrics_globals, "_METER_PROVIDER")):
        return None
    if OTEL_PYTHON_TRACER_PROVIDER in os.environ or OTEL_PYTHON_METER_PROVIDER in os.environ:
        return None
    return lambda: trace._TRACER_PROVIDER is None and metrics_globals._METER_PROVIDER is None


def available() -> bool:
    """Whether ``opentelemetry-api`` is installed (looked up once, without importing it)."""
    global _AVAILABLE
    if _AVAILABLE is None:
        try:
            _AVAILABLE = importlib.util.find_spec("opentelemetry") is not None
        except (ImportError, ValueError):
            _AVAILABLE = False
    return _AVAILABLE


def telemetry_for(option: Any) -> Telemetry | None:
    """A store's ``telemetry=`` option: None (default: on when the extra is installed), True
    (on; :class:`ExtraNotInstalledError` without the extra), False (off), or a Telemetry."""
    if option is None:
        return Telemetry() if available() else None
    if option is True:
        return Telemetry()
    if option is False:
        return None
    if isinstance(option, Telemetry):
        return option
    raise InvalidOptionError(f"telemetry must be None, True, False or a Telemetry, not {type(option).__name__}",
                             argument="telemetry")


class Telemetry:
    """Where a store's spans and metrics go (default: the global providers)."""

    def __init__(self, *, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        try:
            from opentelemetry import metrics, trace
        except ImportError as missing:
            raise ExtraNotInstalledError("telemetry (spans and metrics)", extra="otel",
                                         missing="opentelemetry-api") from missing
        from . import __version__

        self._trace, self._metrics = trace, metrics
        self._given = tracer_provider is not None or meter_provider is not None
        self._unset = _globals_unset()
        self.tracer = trace.get_tracer("redis_ckpt", __version__, tracer_provider=tracer_provider)
        m = metrics.get_meter("redis_ckpt", __version__, meter_provider=meter_provider)
        self.encode_s = m.create_histogram("redis_ckpt.commit.encode.duration", unit="s",
                                           description="client-side work of a commit: encode, frame, checksum")
        self.server_s = m.create_histogram("redis_ckpt.commit.server.duration", unit="s",
                                           description="a commit's wait on the server: the write and its "
                                                       "durability confirmations (WAITAOF/WAIT)")
        self.bytes = m.create_counter("redis_ckpt.commit.bytes", unit="By", description="frame bytes committed")
        self.fenced = m.create_counter("redis_ckpt.fenced", description="commits rejected: token below the fence")
        self.conflicts = m.create_counter("redis_ckpt.conflicts", description="commits rejected: not the head")
        self.fallbacks = m.create_counter("redis_ckpt.load.fallbacks",
                                          description="loads that skipped damaged newer generations")
        self.durability_errors = m.create_counter("redis_ckpt.durability_errors",
                                                  description="writes applied but not confirmed as asked")
        self.retries = m.create_counter("redis_ckpt.retries", description="resends after a lost connection")

    def listening(self) -> bool:
        """Whether a span or a metric would go anywhere: providers were given, or an SDK has set
        the global ones (checked at each operation, so an SDK configured after the store is
        created is seen). With only the API's proxies, an operation is not wrapped at all:
        their no-op spans and instruments would cost tens of microseconds of client CPU per commit."""
        if self._given:
            return True
        # the API's own globals, read directly: get_*_provider() looks its environment variable
        # up at every call (~5 us per operation); they stay None until an SDK sets a provider
        if self._unset is not None and self._unset():
            return False
        return not (type(self._trace.get_tracer_provider()).__name__ in _NOOP_PROVIDERS
                    and type(self._metrics.get_meter_provider()).__name__ in _NOOP_PROVIDERS)

    def observe(self, what: str, run_id: str, flow: Flow[Any], *, namespace: str, durability: str) -> Flow[Any]:
        """``flow`` (an acquire, commit or load of ``run_id``) as a span, its figures recorded.

        Nothing the telemetry pipeline raises (an exporter's bug) changes the operation's
        outcome: it is logged, and the operation returns or raises what it would without it."""
        attrs = {"redis_ckpt.namespace": namespace}
        try:
            span = self.tracer.start_span(f"redis_ckpt.{what}", kind=self._trace.SpanKind.CLIENT, attributes={
                "db.system": "redis", "redis_ckpt.namespace": namespace,
                "redis_ckpt.run_id": run_id if isinstance(run_id, str) else repr(run_id),
                "redis_ckpt.durability": durability,
            })
        except Exception:  # noqa: BLE001 - the operation runs untraced
            log.warning("redis_ckpt telemetry: starting the %s span failed", what, exc_info=True)
            return (yield from flow)
        own = server = 0.0
        sleeps = 0
        sent: dict[str, str] | None = None
        reply: Any = None
        error: BaseException | None = None
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    op = flow.send(reply) if error is None else flow.throw(error)
                except StopIteration as done:
                    own += time.perf_counter() - t0
                    result = done.value
                    break
                own += time.perf_counter() - t0
                if isinstance(op, Sleep):
                    sleeps += 1
                elif sent is None and what == "commit" and isinstance(op, Pipe):
                    sent = _commit_fields(op)
                reply, error = None, None
                t0 = time.perf_counter()
                try:
                    reply = yield op
                except GeneratorExit:
                    flow.close()
                    raise
                except BaseException as exc:  # noqa: BLE001 - thrown into the flow, as the driver would
                    error = exc
                if not isinstance(op, (Sleep, Deadline)):
                    server += time.perf_counter() - t0
        except GeneratorExit:
            _quietly(what, span.end)
            raise
        except BaseException as exc:
            _quietly(what, self._failed, span, exc, attrs)
            _quietly(what, self._close, span, what, own, server, sleeps, sent, attrs)
            raise
        _quietly(what, self._succeeded, span, what, result, sent, attrs)
        _quietly(what, self._close, span, what, own, server, sleeps, sent, attrs)
        return result

    def _failed(self, span: Any, exc: BaseException, attrs: dict[str, str]) -> None:
        if isinstance(exc, FencedError):
            self.fenced.add(1, attrs)
        elif isinstance(exc, ConflictError):
            self.conflicts.add(1, attrs)
        elif isinstance(exc, DurabilityError):
            self.durability_errors.add(1, attrs)
            if exc.generation is not None:  # applied, only not confirmed as asked: which generation
                span.set_attribute("redis_ckpt.generation", exc.generation)
        span.record_exception(exc)
        span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))

    def _succeeded(self, span: Any, what: str, result: Any, sent: dict[str, str] | None,
                   attrs: dict[str, str]) -> None:
        self.describe(span, result)
        if what == "load" and isinstance(result, Checkpoint) and result.skipped:
            self.fallbacks.add(1, attrs)
        elif what == "commit" and sent is not None:
            self.bytes.add(int(sent.get("size") or 0), attrs)

    def _close(self, span: Any, what: str, own: float, server: float, sleeps: int, sent: dict[str, str] | None,
               attrs: dict[str, str]) -> None:
        """Record the operation's figures and end its span."""
        if sleeps:
            self.retries.add(sleeps, attrs)
            span.set_attribute("redis_ckpt.retries", sleeps)
        span.set_attribute("redis_ckpt.server_ms", round(server * 1000, 3))
        if what == "commit":
            self.encode_s.record(own, attrs)
            self.server_s.record(server, attrs)
            span.set_attribute("redis_ckpt.encode_ms", round(own * 1000, 3))
        if sent is not None:
            size = int(sent.get("size") or 0)
            span.set_attribute("redis_ckpt.bytes", size)
            span.set_attribute("redis_ckpt.codec", _CODECS.get(sent.get("codec", ""), sent.get("codec", "")))
        span.end()

    @staticmethod
    def describe(span: Any, result: Any) -> None:
        """What an operation's result tells its span (called before the span ends)."""
        if isinstance(result, Checkpoint):
            span.set_attribute("redis_ckpt.generation", result.generation)
            span.set_attribute("redis_ckpt.bytes", result.size)
            span.set_attribute("redis_ckpt.codec", "msgpack")
            span.set_attribute("redis_ckpt.skipped", len(result.skipped))
        elif isinstance(result, Grant):
            span.set_attribute("redis_ckpt.token", result.token)
            span.set_attribute("redis_ckpt.generation", result.generation)
            span.set_attribute("redis_ckpt.lease_kind", result.kind)
        elif isinstance(result, int) and not isinstance(result, bool):
            span.set_attribute("redis_ckpt.generation", result)


def _quietly(what: str, record: Any, *args: Any) -> None:
    """``record(*args)`` (spans, metrics); what it raises is logged, never the operation's."""
    try:
        record(*args)
    except Exception:  # noqa: BLE001 - an exporter's bug must not change an operation's outcome
        log.warning("redis_ckpt telemetry: recording the %s failed (its outcome stands)", what, exc_info=True)


def _commit_fields(pipe: Pipe) -> dict[str, str] | None:
    """commit.lua's named fields in ``pipe`` (see :class:`CommitFields`), if it sends one."""
    for op in pipe.ops:
        if isinstance(op, Script) and op.name == "commit" and op.args:
            values = op.args[0]
            values = values.decode() if isinstance(values, bytes) else str(values)
            return dict(zip(CommitFields._fields, values.split("\n")))
    return None
