"""Adapters for RL frameworks; each imports its framework only when used (install the matching extra)."""
