"""Drop-in replacements for modules that otel-rl supersedes."""
