"""Implementation; the public surface is re-exported from :mod:`otel_rl`."""
