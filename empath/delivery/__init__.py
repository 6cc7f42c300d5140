"""Delivery: routing, DNS, the SMTP client, retries and bounces."""
