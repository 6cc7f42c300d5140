"""The SMTP server: parser, state machine, replies, and the session loop."""
