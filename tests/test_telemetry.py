"""Spans and metrics (the ``[otel]`` extra), read back with the SDK's in-memory exporters;
and no import, no cost without the extra."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from redis_ckpt import CheckpointStore, ConflictError, DurabilityError, ExtraNotInstalledError, FencedError, \
    RetryPolicy
from redis_ckpt.aio import AsyncCheckpointStore
from redis_ckpt.core.keys import RunKeys

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import StatusCode  # noqa: E402

from redis_ckpt.telemetry import Telemetry  # noqa: E402


class Recorded:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        provider = sdk_trace.TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.telemetry = Telemetry(tracer_provider=provider, meter_provider=MeterProvider(metric_readers=[self.reader]))

    def finished(self, name: str) -> list:
        return [s for s in self.spans.get_finished_spans() if s.name == f"redis_ckpt.{name}"]

    def metrics(self) -> dict[str, list]:
        out: dict[str, list] = {}
        data = self.reader.get_metrics_data()
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    out[m.name] = list(m.data.data_points)
        return out

    def total(self, name: str) -> float:
        return sum(p.value for p in self.metrics().get(name, []))


@pytest.fixture
def recorded() -> Recorded:
    return Recorded()


@pytest.mark.server
def test_acquire_commit_and_load_are_spans_with_their_figures(client, namespace, recorded):
    store = CheckpointStore(client, namespace=namespace, telemetry=recorded.telemetry)
    with store.acquire("r", owner="w", ttl=10) as lease:
        lease.commit({"blob": b"x" * 1000})
        store.commit("r", {"i": 2}, token=lease.token, expected_generation=1)
    store.load("r")
    (acquire,) = recorded.finished("acquire")
    assert acquire.attributes["redis_ckpt.run_id"] == "r" and acquire.attributes["redis_ckpt.token"] == 1
    commits = recorded.finished("commit")
    assert [c.attributes["redis_ckpt.generation"] for c in commits] == [1, 2]
    first = commits[0].attributes
    assert first["redis_ckpt.bytes"] > 1000 and first["redis_ckpt.codec"] == "msgpack"
    assert first["redis_ckpt.durability"] == "local-fsync" and first["redis_ckpt.server_ms"] > 0
    (load,) = recorded.finished("load")
    assert load.attributes["redis_ckpt.generation"] == 2 and load.attributes["redis_ckpt.bytes"] > 0
    m = recorded.metrics()
    assert [p.count for p in m["redis_ckpt.commit.encode.duration"]] == [2]
    assert [p.count for p in m["redis_ckpt.commit.server.duration"]] == [2]
    assert recorded.total("redis_ckpt.commit.bytes") == sum(c.attributes["redis_ckpt.bytes"] for c in commits)


@pytest.mark.server
def test_rejections_and_fallbacks_are_counted(client, namespace, recorded):
    store = CheckpointStore(client, namespace=namespace, telemetry=recorded.telemetry)
    old = store.acquire("r", owner="old", ttl=0.1)
    old.commit({"i": 1})
    old.commit({"i": 2})
    time.sleep(0.15)
    store.acquire("r", owner="new", ttl=10)
    with pytest.raises(FencedError):
        old.commit({"i": 3})
    new = store.acquire("r", owner="new", ttl=10)
    with pytest.raises(ConflictError):
        store.commit("r", {"i": 3}, token=new.token, expected_generation=0)
    client.setrange(RunKeys(namespace, "r").generation(2), 30, b"\xff\xff")
    assert store.load("r").generation == 1
    assert recorded.total("redis_ckpt.fenced") == 1
    assert recorded.total("redis_ckpt.conflicts") == 1
    assert recorded.total("redis_ckpt.load.fallbacks") == 1
    failed = [s for s in recorded.finished("commit") if s.status.status_code is StatusCode.ERROR]
    assert len(failed) == 2 and "FencedError" in failed[0].status.description


@pytest.mark.server
def test_retries_and_durability_errors_are_counted(make_server, namespace, recorded):
    server = make_server("valkey", appendonly="yes", appendfsync="always")
    store = CheckpointStore.from_url(server.url, namespace=namespace, telemetry=recorded.telemetry,
                                     retry=RetryPolicy(deadline_s=20))
    lease = store.acquire("r", owner="w", ttl=30)
    server.stop()
    threading.Timer(0.5, server.start).start()
    assert lease.commit({"i": 1}) == 1  # ridden out: resent once the server is back
    assert recorded.total("redis_ckpt.retries") >= 1
    server.client().config_set("appendonly", "no")  # the next commit is applied but not confirmed
    with pytest.raises(DurabilityError) as unconfirmed:
        lease.commit({"i": 2})
    assert recorded.total("redis_ckpt.durability_errors") == 1
    # the write was applied: its span says which generation, as a confirmed commit's does
    failed = recorded.finished("commit")[-1]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["redis_ckpt.generation"] == unconfirmed.value.generation == 2
    store.close()


@pytest.mark.server
def test_async_store_spans(durable_server, namespace, recorded):
    async def main() -> None:
        store = await AsyncCheckpointStore.from_url(durable_server.url, namespace=namespace,
                                                    telemetry=recorded.telemetry)
        try:
            async with store.acquire("r", owner="w", ttl=10) as lease:
                await lease.commit({"i": 1})
            await store.load("r")
        finally:
            await store.close()

    asyncio.run(main())
    assert [len(recorded.finished(n)) for n in ("acquire", "commit", "load")] == [1, 1, 1]


def test_telemetry_false_records_nothing():
    store = CheckpointStore.in_memory(telemetry=False)
    assert store.telemetry is None


_BLOCKED = textwrap.dedent("""
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ImportError("blocked: " + name)
    sys.meta_path.insert(0, Block())
    import redis_ckpt.telemetry as t
    t._AVAILABLE = False  # what find_spec answers where the package is not installed
    from redis_ckpt import CheckpointStore, ExtraNotInstalledError
    store = CheckpointStore.in_memory()
    with store.acquire("r", owner="w", ttl=5) as lease:
        lease.commit({"i": 1})
    assert store.load("r").state == {"i": 1}
    assert store.telemetry is None
    assert not [m for m in sys.modules if m.startswith("opentelemetry")], "opentelemetry was imported"
    try:
        CheckpointStore.in_memory(telemetry=True)
    except ExtraNotInstalledError as e:
        assert e.extra == "otel", e
    else:
        raise AssertionError("telemetry=True without the extra did not refuse")
    print("ok")
""")


def test_without_the_extra_nothing_is_imported():
    out = subprocess.run([sys.executable, "-c", _BLOCKED], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


_SDK_LATER = textwrap.dedent("""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from redis_ckpt import CheckpointStore
    store = CheckpointStore.in_memory()  # the API is installed, no SDK configured yet
    assert store.telemetry is not None and not store.telemetry.listening()
    with store.acquire("r", owner="w", ttl=5) as lease:
        lease.commit({"i": 1})  # nothing listens: not wrapped, nothing recorded
        spans = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(spans))
        trace.set_tracer_provider(provider)  # the application configures its SDK afterwards
        assert store.telemetry.listening()
        lease.commit({"i": 2})
    names = [s.name for s in spans.get_finished_spans()]
    assert names == ["redis_ckpt.commit"], names
    print("ok")
""")


def test_spans_start_once_an_sdk_is_configured_even_after_the_store():
    out = subprocess.run([sys.executable, "-c", _SDK_LATER], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_a_bad_telemetry_option_is_a_type_error():
    with pytest.raises(TypeError, match="telemetry"):
        CheckpointStore.in_memory(telemetry="yes")
    assert isinstance(ExtraNotInstalledError("x", extra="otel", missing="y"), ImportError)


def test_metrics_export_to_prometheus_as_the_readme_shows():
    """The README's Prometheus names, from the in-memory store (no HTTP server started)."""
    prometheus = pytest.importorskip("opentelemetry.exporter.prometheus")
    from prometheus_client import REGISTRY, generate_latest

    provider = MeterProvider(metric_readers=[prometheus.PrometheusMetricReader()], shutdown_on_exit=False)
    try:
        telemetry = Telemetry(tracer_provider=sdk_trace.TracerProvider(), meter_provider=provider)
        store = CheckpointStore.in_memory(telemetry=telemetry)
        with store.acquire("r", owner="w", ttl=5) as lease:
            lease.commit({"i": 1})
        text = generate_latest(REGISTRY).decode()
        assert "redis_ckpt_commit_server_duration_seconds_bucket" in text
        assert "redis_ckpt_commit_bytes_total" in text
    finally:
        provider.shutdown()  # unregisters its collector


class _Broken(sdk_trace.SpanProcessor):
    """A span processor (an exporter) with a bug: it raises on every span's start or end."""

    def __init__(self, when: str) -> None:
        self.when = when

    def on_start(self, span, parent_context=None) -> None:
        if self.when == "start":
            raise RuntimeError("exporter bug")

    def on_end(self, span) -> None:
        if self.when == "end":
            raise RuntimeError("exporter bug")


@pytest.mark.parametrize("when", ["start", "end"])
def test_a_telemetry_failure_never_changes_an_operations_outcome(when, caplog):
    """A commit that was written returns its generation, and a rejected one raises its own
    typed error, whatever the tracing pipeline does: an exception from an exporter used to
    replace them (a written commit reported as failed; FencedError turned into RuntimeError)."""
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(_Broken(when))
    store = CheckpointStore.in_memory(telemetry=Telemetry(tracer_provider=provider))
    old = store.acquire("r", owner="old", ttl=30)
    assert old.commit({"i": 1}) == 1
    assert store.load("r").generation == 1
    store.revoke("r")
    with pytest.raises(FencedError):
        old.commit({"i": 2})
    assert store.load("r").state == {"i": 1}
    assert "exporter bug" in caplog.text  # logged, not swallowed silently
