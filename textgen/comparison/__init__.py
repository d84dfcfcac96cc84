"""One-hot vs integer ids, measured: the prefixes and estimates, the measured child processes,
the report."""
