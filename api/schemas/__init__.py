"""Pydantic request/response schemas (HTTP edge only)."""
