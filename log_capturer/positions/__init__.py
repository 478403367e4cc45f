"""Acknowledged read positions, saved atomically so a crash loses nothing."""
