"""Shared algorithm machinery."""
