"""The metric exporters that push readers hand their collections to: OTLP (gRPC or HTTP) and the console.

Imports the exporter packages only when one is built (an OTLP/HTTP-only setup never loads gRPC). Imports
:mod:`otel_rl._internal.readers` (the temporality every reader uses) and the settings' types, nothing above them.
"""

from __future__ import annotations

from opentelemetry.sdk.metrics.export import MetricExporter

from otel_rl._internal.config import OtlpSettings
from otel_rl._internal.readers import cumulative_temporality


def otlp_exporter(otlp: OtlpSettings) -> MetricExporter:
    """The OTLP metric exporter (gRPC or HTTP) the ``otlp`` settings describe, with cumulative temporality."""
    endpoint = otlp.resolved_endpoint()
    headers = dict(otlp.headers) or None
    temporality = cumulative_temporality()
    if otlp.protocol == "grpc":
        from grpc import Compression
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        insecure = otlp.insecure if otlp.insecure is not None else endpoint.startswith("http://")
        # gRPC metadata keys must be lowercase: "Authorization" would fail every export ("Illegal header key").
        headers = {key.lower(): value for key, value in otlp.headers} or None
        credentials = None
        if otlp.certificate or otlp.client_certificate:
            import grpc

            def read(path: str | None) -> bytes | None:
                if not path:
                    return None
                with open(path, "rb") as f:
                    return f.read()

            credentials = grpc.ssl_channel_credentials(read(otlp.certificate), read(otlp.client_key),
                                                       read(otlp.client_certificate))
        compression = {"none": Compression.NoCompression, "gzip": Compression.Gzip,
                       "deflate": Compression.Deflate}[otlp.compression]
        return OTLPMetricExporter(endpoint=endpoint, insecure=insecure, credentials=credentials, headers=headers,
                                  timeout=otlp.timeout, compression=compression,
                                  preferred_temporality=temporality)
    from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter

    compression = {"none": HttpCompression.NoCompression, "gzip": HttpCompression.Gzip,
                   "deflate": HttpCompression.Deflate}[otlp.compression]
    return HttpExporter(endpoint=endpoint, certificate_file=otlp.certificate or None,
                        client_certificate_file=otlp.client_certificate, client_key_file=otlp.client_key,
                        session=_session_keeping_ca() if otlp.certificate else None, headers=headers,
                        timeout=otlp.timeout, compression=compression, preferred_temporality=temporality)


def _session_keeping_ca():
    """A requests session whose CA file (otlp.certificate) is not replaced by REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE.

    requests lets those variables override a session's ``verify`` path (psf/requests#3829), so a machine that sets
    them (many do) would verify the collector against the system CAs and fail every export.
    """
    import requests

    class Session(requests.Session):
        def merge_environment_settings(self, url, proxies, stream, verify, cert):
            settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
            if verify is None and isinstance(self.verify, str):
                settings["verify"] = self.verify
            return settings

    return Session()


def console_exporter() -> MetricExporter:
    """The exporter of ``exporters: [console]``: each collection printed to stdout, for a quick look."""
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

    return ConsoleMetricExporter(preferred_temporality=cumulative_temporality())
