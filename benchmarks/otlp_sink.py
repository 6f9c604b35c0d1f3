"""A tiny OTLP/HTTP sink in its own process, and the otel-rl / plain-SDK exporters pointed at it.

The sink answers 200 to every POST and runs in a separate process so that its CPU is not counted in the benchmark's.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

_SINK = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
ThreadingHTTPServer.allow_reuse_address = True
s = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""


def start_sink(port: int = 0) -> tuple[subprocess.Popen, int]:
    """Start the sink on ``port`` (0: a free one); returns the process and its port."""
    proc = subprocess.Popen([sys.executable, "-c", _SINK, str(port)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None:
        proc.terminate()
        proc.wait(5)


def otlp_config(port: int, interval: float, limit: int = 2000) -> dict[str, Any]:
    """otel-rl's configuration exporting OTLP/HTTP to the sink on ``port`` every ``interval`` seconds."""
    return {"exporters": ["otlp"], "cardinality_limit": limit, "shutdown_timeout": 2.0,
            "otlp": {"protocol": "http/protobuf", "endpoint": f"http://127.0.0.1:{port}/v1/metrics",
                     "export_interval": interval, "timeout": 1.0}}


def plain_sdk(port: int, series: int) -> tuple[Any, Any]:
    """The plain OTel SDK baseline exporting to the sink: the original helpers on synchronous instruments, the same
    OTLP/HTTP exporter and temporality as otel-rl, and a cardinality limit above ``series`` so that it exports every
    series otel-rl does (the SDK's default of 2000 would quietly export fewer). Returns (baseline, its reader);
    nothing is exported until the reader collects or the baseline is shut down."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import Counter, Histogram
    from opentelemetry.sdk.metrics import _Gauge as Gauge  # the SDK's synchronous gauge
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    from otel_rl._internal.readers import cumulative_temporality

    import baselines

    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"http://127.0.0.1:{port}/v1/metrics",
                           preferred_temporality=cumulative_temporality()),
        export_interval_millis=3_600_000,
        cardinality_limits={k: series + 10 for k in (Counter, Gauge, Histogram)})
    return baselines.PlainOtel(readers=[reader]), reader
