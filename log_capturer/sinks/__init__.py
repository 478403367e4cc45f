"""Where records go: one module per sink (file, stdout, Loki, OTLP)."""
