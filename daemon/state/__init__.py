"""The durable model of sessions, nodes and params, and the SQLite store that keeps it."""
