"""SMTP: the protocol both ends share (replies, commands, the wire codec) and the server
side (machine, data reader, relay control, connection, session, server); procs/ holds the
helper processes."""
