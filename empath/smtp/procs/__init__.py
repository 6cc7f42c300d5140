"""SMTP helper processes: the daemon's pool, the child process, the channel between them."""
