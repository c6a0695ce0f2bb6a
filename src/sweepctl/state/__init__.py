"""What is on disk for a sweep and its runs, and what to do about it."""
