"""Sobranie real-time lab: reference servers, benchmark harness, capacity models, report."""

__version__ = "0.1.0"
