"""log_capturer: exact, leak-free capture of Docker container logs."""

__version__ = "0.1.0"
