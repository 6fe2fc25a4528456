"""govern: purpose-based data governance gateway."""

__version__ = "0.1.0"
