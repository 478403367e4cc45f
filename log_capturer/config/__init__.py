"""Configuration: shared value types (types.py) and the root model and loader (loader.py).

Each section's model lives beside the code that uses it; this package only composes them.
"""
