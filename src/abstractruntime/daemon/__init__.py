"""The long-running daemon: transports, per-connection sessions and the hub that owns the
Runtime, the Scheduler and the stores."""
