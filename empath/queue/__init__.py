"""The queue: one SQLite database in WAL mode, written by one group-committing writer."""
