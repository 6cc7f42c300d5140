"""What becomes a queue entry: every way in (submit), the headers Empath adds, DKIM, DSN reports."""
