"""CSV -> run specs -> plan; multi-pod placement. Pure."""
