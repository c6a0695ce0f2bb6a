"""sweepctl: run ML training sweeps on rented multi-GPU pods."""

__version__ = "0.1.0"
