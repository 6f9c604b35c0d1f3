"""How to install an extra: otel-rl is on no package index, so the hint names the checkout, never the bare name."""

from __future__ import annotations


def install_hint(extra: str) -> str:
    """The command that installs ``extra`` from a checkout of otel-rl."""
    return (f"pip install '.[{extra}]' from the otel-rl repository root, or pip install '/path/to/otel-rl[{extra}]' "
            "(otel-rl is installed from its checkout, not from PyPI)")
