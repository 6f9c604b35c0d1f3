"""Fast ``/metrics`` rendering straight from the metric state, byte-identical to prometheus_client's encoders.

Going store -> OpenTelemetry observations -> data points -> prometheus_client families -> text would allocate
several objects per series; at 50k series that takes seconds, and its garbage-collector runs stall the training
thread. This module writes the same text 0.0.4 / OpenMetrics bytes from the store directly, through the store's
read API (``Metric.series`` under ``Metric.lock``, ``Metric.label_dict``):

* each series' sample prefix (``name{k="v",...} ``, labels sorted and escaped as prometheus_client does) is
  encoded once and cached per metric; the cache follows the store (entries of removed series are dropped);
* per scrape a series costs a dict lookup and its value's text: no tuples, dicts or samples, so a scrape leaves
  the garbage collector nothing to do;
* histograms are read one short lock per chunk of series, never for the whole snapshot;
* ``# HELP`` / ``# TYPE`` lines come from prometheus_client's own encoder (rendered once per format).

Label values with lone surrogates (which UTF-8 cannot encode) are stored with the surrogates backslash-escaped
(``run-\\udcff``, see ``Metric.attributes``), so they render as on the OpenTelemetry path. Metrics that other
code registers on the same MeterProvider come through the OpenTelemetry collection and prometheus_client's
encoder, after the catalog metrics (the ``others`` argument of :meth:`StoreRenderer.render`).

Imports the store and the held-back counts, nothing above them.
"""

from __future__ import annotations

import mmap
import threading
from collections.abc import Callable
from itertools import accumulate
from typing import Any

from prometheus_client.metrics_core import Metric as PromMetric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.utils import floatToGoString

from otel_rl._internal.held_back import flush_held_back
from otel_rl._internal.store import Histogram, Metric, Registry

_CHUNK = 64  # histogram series read per lock acquisition (and encoded at once)
_COUNT_TEXT = [f"{i}.0" for i in range(1024)]  # floatToGoString of small integer counts


def _value_text(value: Any) -> str:
    """floatToGoString, with the common case (a float below 1e6 in magnitude) done without a call."""
    if type(value) is float and -1e6 < value < 1e6:
        return repr(value)
    return floatToGoString(value)


def _count_text(count: int) -> str:
    return _COUNT_TEXT[count] if 0 <= count < 1024 else floatToGoString(count)


def _clean(value: str) -> str:
    """``value`` escaped as a Prometheus label value. The store keeps it valid UTF-8 without a carriage return
    (lone surrogates and carriage returns are stored backslash-escaped, the same text on both paths)."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _label_text(labels: dict[str, str]) -> str:
    return ",".join(f'{k}="{_clean(v)}"' for k, v in sorted(labels.items()))


class _MetricCache:
    """Encoded text per series of one metric, valid while the store keeps the same series dict."""

    __slots__ = ("lines", "series", "shared")

    def __init__(self, series: dict[Any, Any]) -> None:
        self.series = series
        self.lines: dict[tuple[str, ...], str] = {}
        self.shared: str | None = None  # a histogram's template for all series ("" when it has none)


class _SeriesTemplate(str):
    """A histogram series' own ``str.format`` template, for a label layout the metric's shared template does not
    fit (a type of its own, so the cache tells it from a series' label text for the shared template)."""

    __slots__ = ()


class StoreRenderer:
    """Renders the catalog metrics of ``registry`` as Prometheus text 0.0.4 or OpenMetrics 1.0."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._caches: dict[str, _MetricCache] = {}
        self._headers: dict[Any, list[str]] = {}
        self._lock = threading.Lock()
        #: Bytes of the last exposition: the next one's memory map starts a quarter bigger.
        self._last_size = 0

    def after_fork_in_child(self) -> None:
        """A forked child may have inherited the lock held by a scrape in the parent: use a new one."""
        self._lock = threading.Lock()

    # -- formats ---------------------------------------------------------------------------------------------------

    @staticmethod
    def format_of(encoder: Any) -> str | None:
        """"text" or "openmetrics" for the encoders prometheus_client's ``choose_encoder`` returns with the default
        name escaping (or UTF-8 allowed, which leaves our names unchanged); None for anything else."""
        from prometheus_client import exposition

        func = getattr(encoder, "func", encoder)
        # prometheus_client before 0.22 has no name escaping (nor these constants): its encoders are plain functions.
        default = getattr(openmetrics, "UNDERSCORES", None)
        escaping = getattr(encoder, "keywords", {}).get("escaping", default)
        if escaping not in (default, getattr(openmetrics, "ALLOWUTF8", None)):
            return None
        if func is exposition.generate_latest:
            return "text"
        if func is openmetrics.generate_latest:
            return "openmetrics"
        return None

    def _header(self, encoder: Any, fmt: str) -> list[str]:
        """Each catalog metric's HELP/TYPE(/UNIT) lines as prometheus_client's encoder writes them."""
        key = (fmt, getattr(encoder, "keywords", {}).get("escaping"))
        headers = self._headers.get(key)
        if headers is None or len(headers) != len(self._registry.metrics):
            headers = []
            for metric in self._registry.metrics.values():
                spec = metric.spec
                family = PromMetric(spec.family, spec.help, spec.type)
                text = encoder(_Families([family])).decode("utf-8")
                headers.append(text[: -len("# EOF\n")] if fmt == "openmetrics" else text)
            self._headers[key] = headers
        return headers

    # -- series ----------------------------------------------------------------------------------------------------

    def _cache(self, metric: Metric) -> _MetricCache:
        series = metric.series
        cache = self._caches.get(metric.name)
        if cache is None or cache.series is not series:  # first scrape, or the store was cleared
            cache = self._caches[metric.name] = _MetricCache(series)
        elif len(cache.lines) > len(series):  # series were removed: forget their text
            cache.lines = {k: v for k, v in cache.lines.items() if k in series}
        return cache

    def _prefix(self, metric: Metric, key: tuple[str, ...]) -> str:
        labels = _label_text(metric.label_dict(key))
        return f"{metric.name}{{{labels}}} " if labels else f"{metric.name} "

    @staticmethod
    def _shared_template(metric: Histogram) -> str | None:
        """One ``str.format`` template for every series of a histogram whose label keys all sort before ``le``:
        ``{0}`` is a series' label text, ``{1}``... its values. None for other label layouts."""
        if not metric.label_keys or max(metric.label_keys) >= "le":
            return None
        name = metric.name
        les = [floatToGoString(b) for b in metric.bounds] + ["+Inf"]
        lines = [name + '_bucket{{{0},le="' + le + '"}} {' + str(i + 1) + "}\n" for i, le in enumerate(les)]
        lines.append(name + "_count{{{0}}} {" + str(len(les) + 1) + "}\n")
        lines.append(name + "_sum{{{0}}} {" + str(len(les) + 2) + "}\n")
        return "".join(lines)

    def _series_entry(self, metric: Histogram, key: tuple[str, ...], shared: str | None) -> str:
        """A series' label text for the shared template, or its own template (_SeriesTemplate) for any other layout."""
        labels = metric.label_dict(key)
        if shared is not None and len(labels) == len(metric.label_keys) and set(labels) == set(metric.label_keys):
            return _label_text(labels)
        braced = {k: v.replace("{", "{{").replace("}", "}}") for k, v in labels.items()}
        name = metric.name.replace("{", "{{").replace("}", "}}")
        lines = []
        les = [floatToGoString(b) for b in metric.bounds] + ["+Inf"]
        for i, le in enumerate(les):
            lines.append(f"{name}_bucket{{{{{_label_text({**braced, 'le': le})}}}}} {{{i + 1}}}\n")
        text = _label_text(braced)
        braces = f"{{{{{text}}}}}" if text else ""
        lines.append(f"{name}_count{braces} {{{len(les) + 1}}}\n")
        lines.append(f"{name}_sum{braces} {{{len(les) + 2}}}\n")
        return _SeriesTemplate("".join(lines))

    def _scalar_lines(self, metric: Metric, out: list[str], chunks: _Output) -> None:
        cache = self._cache(metric)
        lines = cache.lines
        with metric.lock:  # a dict copy is one C call: the lock is held for about a microsecond per 1k series
            values = cache.series.copy()
        append = out.append
        for key, value in values.items():
            prefix = lines.get(key)
            if prefix is None:
                prefix = lines[key] = self._prefix(metric, key)
            append(prefix)
            append(repr(value) if type(value) is float and -1e6 < value < 1e6 else floatToGoString(value))
            append("\n")
            if len(out) >= _FLUSH:
                _flush(out, chunks)

    def _histogram_lines(self, metric: Histogram, out: list[str], chunks: _Output) -> None:
        cache = self._cache(metric)
        lines, series = cache.lines, cache.series
        if cache.shared is None:
            cache.shared = self._shared_template(metric) or ""
        shared = cache.shared or None
        keys = list(series)
        append = out.append
        lock = metric.lock
        count_text = _COUNT_TEXT
        for start in range(0, len(keys), _CHUNK):
            with lock:  # short: a chunk of series, never the whole metric
                for key in keys[start:start + _CHUNK]:
                    state = series.get(key)
                    if state is None:
                        continue
                    entry = lines.get(key)
                    if entry is None:
                        entry = lines[key] = self._series_entry(metric, key, shared)
                    template = entry if shared is None or type(entry) is _SeriesTemplate else shared
                    cumulative = list(accumulate(state.counts))  # the last is the +Inf bucket: the count
                    count = cumulative[-1]
                    if count < 1024:
                        append(template.format(entry, *[count_text[c] for c in cumulative], count_text[count],
                                               _value_text(state.sum)))
                    else:
                        append(template.format(entry, *[_count_text(c) for c in cumulative], _count_text(count),
                                               _value_text(state.sum)))
            _flush(out, chunks)

    # -- the exposition --------------------------------------------------------------------------------------------

    def _estimate(self) -> int:
        """Generously, the bytes of an exposition of the current series: a map that has to grow copies what it
        holds while holding the GIL, and pages of a map that are never written cost nothing."""
        size = 1 << 16
        for metric in self._registry.metrics.values():
            lines = len(metric.bounds) + 4 if isinstance(metric, Histogram) else 1  # buckets, +Inf, _count, _sum
            size += metric.series_count() * lines * (96 + 24 * len(metric.label_keys))
        return size

    def render(self, encoder: Any, others: Callable[[], list[PromMetric]] | None = None) -> memoryview | None:
        """The exposition of every catalog metric, then the families ``others`` returns (other instruments), as a
        read-only bytes-like view; None when ``encoder`` is not one of the two formats this renders (the caller
        then uses the encoder)."""
        fmt = self.format_of(encoder)
        if fmt is None:
            return None
        flush_held_back()  # the Gymnasium wrappers' step counts
        extra = others() if others is not None else []
        # The text is joined and encoded a few thousand lines at a time into a memory map sized from the last
        # exposition: one join of megabytes, or a buffer grown by realloc, holds the GIL for tens of milliseconds
        # (copying, and faulting in fresh memory at once), stalling the training thread.
        chunks = _Output(max(self._last_size + self._last_size // 4, self._estimate()))
        with self._lock:
            out: list[str] = []
            for header, metric in zip(self._header(encoder, fmt), self._registry.metrics.values()):
                out.append(header)
                if isinstance(metric, Histogram):
                    self._histogram_lines(metric, out, chunks)
                else:
                    self._scalar_lines(metric, out, chunks)
        if extra:
            text = encoder(_Families(extra)).decode("utf-8")
            out.append(text[: -len("# EOF\n")] if fmt == "openmetrics" else text)
        if fmt == "openmetrics":
            out.append("# EOF\n")
        _flush(out, chunks)
        body = chunks.value()
        self._last_size = len(body)
        return body


_FLUSH = 3 * 1024  # parts (three per line) joined and encoded at once


def _flush(out: list[str], chunks: _Output) -> None:
    if out:
        chunks.write("".join(out).encode("utf-8"))
        out.clear()


def _anonymous_map(size: int) -> mmap.mmap:
    """Private anonymous memory (a forked child gets a copy-on-write copy, not pages shared with its parent)."""
    if hasattr(mmap, "MAP_PRIVATE"):  # POSIX; Windows' anonymous maps are private anyway
        return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
    return mmap.mmap(-1, size)


class _Output:
    """The exposition's bytes, written into an anonymous memory map.

    A scrape of 50k series is megabytes. In ``bytes`` or ``BytesIO`` that is one large heap block, and once the
    allocator serves such blocks from the heap (glibc does after freeing a large one), growing it copies megabytes
    and faults in fresh pages in one call that holds the GIL: 15-20 ms stalls of the training thread, measured.
    Pages of a map are faulted in as each chunk is written, a few dozen at a time, and a map sized from the last
    exposition rarely has to grow. Pages never written cost nothing.
    """

    __slots__ = ("_map", "_size")

    def __init__(self, capacity: int) -> None:
        self._map = _anonymous_map(max(capacity, 1 << 16))
        self._size = 0

    def write(self, data: bytes) -> None:
        end = self._size + len(data)
        if end > len(self._map):  # bigger than the last exposition by a quarter: a new map, twice the size
            bigger = _anonymous_map(max(2 * len(self._map), end))
            bigger[:self._size] = memoryview(self._map)[:self._size]
            self._map = bigger
        self._map[self._size:end] = data
        self._size = end

    def value(self) -> memoryview:
        """What was written, without a copy (the map lives as long as the view)."""
        return memoryview(self._map)[:self._size].toreadonly()


class _Families:
    """The smallest prometheus_client Collector: yields the given families."""

    def __init__(self, families: list[PromMetric]) -> None:
        self._families = families

    def collect(self) -> list[PromMetric]:
        return self._families
