"""Project tools: scripts that write project files or prepare inputs (not measurements: those are benchmarks/)."""
