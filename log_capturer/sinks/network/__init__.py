"""What both network sinks (Loki's push API, OTLP/HTTP) share: their common settings and
credentials, batches as columns of entries, full pushes pipelined, relabelling, and the
at-least-once delivery over HTTP (retries, the disk spool and its replay, refusals
settled in bounded requests, dead letters); and Loki's own spelling, which both read
(Loki answers OTLP pushes too)."""
