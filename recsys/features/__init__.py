"""Events in, features out: the event schema, the broker client, the Redis online store, the event log."""
