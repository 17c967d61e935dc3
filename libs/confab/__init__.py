"""Confab's shared library: contracts, NATS plumbing, projections, settings and logging."""

__version__ = "0.1.0"
