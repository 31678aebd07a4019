"""The service around the cycle: the per-command context, the daemon, its lock, metrics, logs."""
