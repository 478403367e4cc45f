"""The HTTP endpoints: /metrics, /health, /ready."""
