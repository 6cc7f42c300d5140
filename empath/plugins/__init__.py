"""Plug-ins: Python functions that check or tag mail at the SMTP hooks and before delivery (docs/plugins.md)."""
