"""Read-only pictures of a sweep: status, report, plots, GPUs, ETA."""
