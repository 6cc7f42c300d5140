"""The control socket: both ends of empathctl's JSON-lines channel into the running daemon,
the verbs it serves (also from the database when the daemon is down), and their text."""
