"""``python -m interest.config`` prints docs/configuration.md (``make docs`` writes it)."""

from interest.config.reference import reference

print(reference(), end="")
