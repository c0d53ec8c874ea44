"""Pytest fixtures for the fake upstream (filled in by the adapter work)."""
