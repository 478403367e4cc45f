"""Prometheus metrics: definitions, and collectors that read live state at scrape time."""
