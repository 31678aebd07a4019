"""Alert delivery: the notifier protocol, the plugin registry, outbox delivery and built-ins."""
