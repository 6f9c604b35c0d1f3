"""Read a live ``/metrics`` endpoint into plain values, for tests that compare it with a framework's own figures."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from procs import http_get


class Scrape:
    """One scrape of ``/metrics``: ``value(sample_name, **labels)``, None when the sample is absent."""

    def __init__(self, port: int) -> None:
        body = http_get(f"http://127.0.0.1:{port}/metrics").decode()
        self.samples = [(s.name, s.labels, s.value) for f in text_string_to_metric_families(body) for s in f.samples]

    def value(self, name: str, **labels: str) -> float | None:
        for sample, sample_labels, value in self.samples:
            if sample == name and all(sample_labels.get(k) == v for k, v in labels.items()):
                return value
        return None
