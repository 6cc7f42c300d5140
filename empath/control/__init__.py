"""The control socket: empathctl's JSON-lines channel into the running daemon."""
