"""Standalone torch models of searchable architectures (one module per space family)."""
