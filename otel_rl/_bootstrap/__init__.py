"""The directory ``otel-rl run`` puts first on ``PYTHONPATH``: its ``sitecustomize`` instruments the script."""
