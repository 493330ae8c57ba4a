"""The durable model of sessions, nodes and their params, and its SQLite store."""
