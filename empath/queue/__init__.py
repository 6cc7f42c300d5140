"""The queue: one SQLite database in WAL mode behind one Queue object (store.py), and the
functions every reader and writer of it runs: claims, admin, stats, backup."""
