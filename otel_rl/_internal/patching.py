"""Patching a framework when it is imported, and undoing it: the machinery under otel-rl's instrumentors.

* :data:`post_import` runs a hook right after a module's first import (at once when it is imported already), so a
  program that never imports a framework does not pay for importing it;
* :func:`patch_attribute` replaces a function or method by a wrapper and returns what puts the original back;
* :class:`Instrumentor` is the base of the framework instrumentors (:mod:`otel_rl._internal.instrumentors`): it
  applies its patches on ``instrument()`` (checking the framework's version first) and undoes them on
  ``uninstrument()``. Its base is opentelemetry-instrumentation's ``BaseInstrumentor`` when that is installed
  (``opentelemetry-instrument`` loads instrumentors by it), else :class:`FallbackInstrumentorBase`, which has the
  same ``instrument()`` / ``uninstrument()`` (``otel-rl run`` works without opentelemetry-instrumentation).

Knows nothing of the frameworks nor of telemetry: imports no module of ours.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import logging
import sys
import threading
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

_logger = logging.getLogger("otel_rl")

__all__ = ["FallbackInstrumentorBase", "Instrumentor", "InstrumentorBase", "patch_attribute", "post_import"]


class FallbackInstrumentorBase:
    """The part of ``BaseInstrumentor`` otel-rl uses: one instance per class, instrument / uninstrument once."""

    _instance: Any = None
    _is_instrumented_by_opentelemetry = False

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls.__dict__.get("_instance") is None:
            cls._instance = object.__new__(cls)
        return cls._instance

    @property
    def is_instrumented_by_opentelemetry(self) -> bool:
        return self._is_instrumented_by_opentelemetry

    def instrument(self, **kwargs: Any) -> None:
        if self._is_instrumented_by_opentelemetry:
            return
        self._instrument(**kwargs)
        self._is_instrumented_by_opentelemetry = True

    def uninstrument(self, **kwargs: Any) -> None:
        if self._is_instrumented_by_opentelemetry:
            self._uninstrument(**kwargs)
            self._is_instrumented_by_opentelemetry = False

    def _instrument(self, **kwargs: Any) -> None:
        raise NotImplementedError

    def _uninstrument(self, **kwargs: Any) -> None:
        raise NotImplementedError


if TYPE_CHECKING:
    InstrumentorBase = FallbackInstrumentorBase
else:
    try:  # with opentelemetry-instrumentation, its base class (opentelemetry-instrument loads instrumentors by it)
        from opentelemetry.instrumentation.instrumentor import BaseInstrumentor as InstrumentorBase
    except ImportError:  # ``otel-rl run`` works without opentelemetry-instrumentation
        InstrumentorBase = FallbackInstrumentorBase


class _Loader(importlib.abc.Loader):
    """A module's own loader, plus the patches to apply once the module has run."""

    def __init__(self, loader: Any, hooks: list[Callable[[Any], None]]) -> None:
        self._loader = loader
        self._hooks = hooks

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        for hook in self._hooks:
            try:
                hook(module)
            except Exception:
                _logger.exception("otel-rl: could not instrument %s", module.__name__)

    def __getattr__(self, name: str) -> Any:  # resources, get_source, ...: the module's own loader answers
        return getattr(self._loader, name)


class PostImportHooks(importlib.abc.MetaPathFinder):
    """Patches applied when a module is first imported, so that a program that never imports a framework does
    not pay for importing it (Ray's and torch's start-up, in every Python process a script starts).

    It sits first in ``sys.meta_path`` while a hook waits: for a module with hooks it finds the module's spec
    through the other finders and wraps the spec's loader, which runs the hooks after the module's code.
    """

    def __init__(self) -> None:
        self.hooks: dict[str, list[Callable[[Any], None]]] = {}
        self._busy = threading.local()  # the name this thread is finding, so the search skips this finder

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        hooks = self.hooks.get(name)
        if not hooks or getattr(self._busy, "name", None) == name:
            return None
        self._busy.name = name
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self._busy.name = None
        if spec is None or spec.loader is None:
            return None
        del self.hooks[name]
        spec.loader = _Loader(spec.loader, hooks)
        return spec

    def when_imported(self, name: str, hook: Callable[[Any], None]) -> None:
        """Run ``hook(module)`` once module ``name`` is imported (at once when it is already)."""
        module = sys.modules.get(name)
        if module is not None:
            hook(module)
            return
        self.hooks.setdefault(name, []).append(hook)
        if self not in sys.meta_path:
            sys.meta_path.insert(0, self)

    def forget(self, hook: Callable[[Any], None]) -> None:
        """Drop a hook whose module has not been imported yet."""
        for name, hooks in list(self.hooks.items()):
            if hook in hooks:
                hooks.remove(hook)
            if not hooks:
                del self.hooks[name]


#: The process' one post-import finder (``otel-rl run``'s bootstrap hands it a descendant's first framework import).
post_import = PostImportHooks()


def patch_attribute(owner: Any, name: str, make_wrapper: Callable[[Any], Any]) -> Callable[[], None]:
    """Replace ``owner.name`` by ``make_wrapper(original)``; returns what puts the original back.

    The original is put back only while the wrapper is still in place (whoever patched over it keeps theirs)."""
    original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    wrapper = functools.wraps(original)(make_wrapper(original))
    setattr(owner, name, wrapper)

    def restore() -> None:
        if getattr(owner, name, None) is wrapper or owner.__dict__.get(name) is wrapper:
            setattr(owner, name, original)

    return restore


class Instrumentor(InstrumentorBase):
    """Patches applied when their module is imported (at once if it is already), undone by ``uninstrument()``."""

    _instruments: tuple[str, ...] = ()  #: the framework's distribution and the versions otel-rl supports

    def instrumentation_dependencies(self) -> Collection[str]:
        return self._instruments

    @classmethod
    def installed(cls) -> bool:
        """Whether the framework's distribution is installed (at any version)."""
        import importlib.metadata
        import re

        for requirement in cls._instruments:
            try:
                importlib.metadata.distribution(re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0])
            except importlib.metadata.PackageNotFoundError:
                return False
        return True

    def _targets(self) -> dict[str, Callable[[Any], list[Callable[[], None]]]]:
        """Module name -> what patches it, returning what undoes the patches."""
        raise NotImplementedError

    def _unsupported(self) -> str | None:
        """Why the installed framework's version is not one otel-rl supports, or None (also when not installed).

        opentelemetry-instrument does not ask instrumentation_dependencies() here: it checks a distribution's
        ``instruments`` extra, which otel-rl (three frameworks, each optional) has not. So the instrumentor checks.
        """
        if not self.installed():
            return None
        try:
            from packaging.requirements import Requirement
        except ImportError:  # packaging comes with opentelemetry-instrumentation and pip's users; else no check
            return None
        import importlib.metadata

        for dependency in self._instruments:
            requirement = Requirement(dependency)
            version = importlib.metadata.version(requirement.name)
            if not requirement.specifier.contains(version, prereleases=True):
                return f"{requirement.name} {version} is installed; otel-rl supports {requirement.specifier}"
        return None

    def _instrument(self, **kwargs: Any) -> None:
        self._restore: list[Callable[[], None]] = []
        self._pending: list[Callable[[Any], None]] = []
        unsupported = self._unsupported()
        if unsupported is not None:
            _logger.warning("otel-rl: %s; %s patches nothing", unsupported, type(self).__name__)
            return
        for name, patch in self._targets().items():
            def hook(module: Any, patch: Any = patch) -> None:
                self._restore.extend(patch(module))
            self._pending.append(hook)
            post_import.when_imported(name, hook)

    def _uninstrument(self, **kwargs: Any) -> None:
        for hook in getattr(self, "_pending", []):
            post_import.forget(hook)
        for restore in reversed(getattr(self, "_restore", [])):
            restore()
        self._restore, self._pending = [], []
