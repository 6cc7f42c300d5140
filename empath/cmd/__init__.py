"""Every command: empath, empathctl, sendmail, mailq, and the SMTP helper process."""
