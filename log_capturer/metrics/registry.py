"""Every metric the daemon exports, defined once.

Per-line counters carry only low-cardinality labels (stream, sink, status): never a
container id, which would grow the series count with every container ever seen.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PREFIX = "log_capturer"

# -- Docker API --------------------------------------------------------------------------
DOCKER_API_REQUESTS = Counter(
    f"{PREFIX}_docker_api_requests",
    "Docker API requests (every try; streams not included), by operation.",
    ["operation"],
)
DOCKER_API_ERRORS = Counter(
    f"{PREFIX}_docker_api_errors",
    "Docker API call failures, transient (retried) or permanent.",
    ["operation", "kind"],
)
DOCKER_API_RETRIES = Counter(
    f"{PREFIX}_docker_api_retries", "Retries of Docker API calls after a transient error.",
    ["operation"],
)

DOCKER_TLS_ERRORS = Counter(
    f"{PREFIX}_docker_tls_errors",
    "Connections to the engine that failed in TLS, by OpenSSL's reason "
    "(certificate_verify_failed: the engine's certificate is not signed by our CA; "
    "sslv3_alert_bad_certificate, tlsv13_alert_certificate_required...: the engine refused "
    "our client certificate; unexpected_eof: the engine hung up during the handshake, often "
    "the same refusal; load_failed: our TLS files cannot be read).",
    ["reason"],
)

# -- discovery ---------------------------------------------------------------------------
CONTAINERS_MONITORED = Gauge(
    f"{PREFIX}_containers_monitored", "Containers with a running monitor thread."
)
DISCOVERY_EVENTS = Counter(
    f"{PREFIX}_discovery_events", "Container events received from the engine.", ["action"]
)
DISCOVERY_RECONNECTS = Counter(
    f"{PREFIX}_discovery_event_stream_reconnects",
    "Times the /events stream was reopened after it ended or failed.",
)
DISCOVERY_RELISTS = Counter(
    f"{PREFIX}_discovery_relists",
    "Full container listings (at start, every relist_interval, and after each event gap).",
)
DISCOVERY_UP = Gauge(
    f"{PREFIX}_discovery_up", "1 while the /events stream is connected, else 0."
)

# -- capture -----------------------------------------------------------------------------
STREAM_WINDOWS = Counter(
    f"{PREFIX}_stream_windows",
    "Log stream windows (one request each) by how they ended.",
    ["end"],
)
STREAM_HEADER_TIMEOUTS = Counter(
    f"{PREFIX}_stream_header_timeouts",
    "Log requests with no response headers by their deadline, ended as a quiet window "
    "(end=deadline): Podman answers a log request only with its first line.",
)
LINES_CAPTURED = Counter(
    f"{PREFIX}_lines_captured", "New log lines captured and queued for delivery.", ["stream"]
)
BYTES_CAPTURED = Counter(
    f"{PREFIX}_bytes_captured", "Message bytes of the new lines captured.", ["stream"]
)
LINES_DEDUPLICATED = Counter(
    f"{PREFIX}_lines_deduplicated",
    "Lines the engine re-sent at a resume boundary (inclusive since) and that were dropped.",
    ["stream"],
)
LINES_RESENT = Counter(
    f"{PREFIX}_lines_resent",
    "Lines a followed json-file stream sent again when the engine rotated the log file "
    "(a step back in time to lines just delivered), dropped.",
    ["stream"],
)
LINES_TRUNCATED = Counter(
    f"{PREFIX}_lines_truncated", "Lines longer than max_line_bytes, cut and marked truncated."
)
STREAM_TURNS_YIELDED = Counter(
    f"{PREFIX}_stream_turns_yielded",
    "Log streams ended before their window because others waited for a Docker connection.",
)
READ_THROTTLED_SECONDS = Counter(
    f"{PREFIX}_read_throttled_seconds",
    "Time monitors waited between reads to keep a container under "
    "container_monitor.max_lines_per_second / max_bytes_per_second (the engine keeps its lines).",
)
CONTAINERS_THROTTLED = Gauge(
    f"{PREFIX}_containers_throttled",
    "Containers whose monitor is waiting now for the read rate bound.",
)
TAIL_FALLBACKS = Counter(
    f"{PREFIX}_stream_tail_fallbacks",
    "Tail reads given up because they could not be proven gap-free, and read again with a "
    "10x larger tail, a proof read or, past the largest tail, a plain since (full: the "
    "tail came back full; until: the body ended at until, which proves nothing; "
    "held_bytes: more than tail_hold_max_bytes held back while checking; budget: the "
    "monitors together held container_monitor.buffer_budget).",
    ["reason"],
)
PROOF_READS = Counter(
    f"{PREFIX}_stream_proof_reads",
    "Non-follow reads made so that the engine's end of the body proves a quiet stream "
    "caught up (monitor/resume.py; resend: its reopen would send a burst of known lines "
    "again; unproven: a follow tail read ended before its check; quiet_gap: a tail came "
    "back full on a quiet log).",
    ["reason"],
)
TAIL_READS = Counter(
    f"{PREFIX}_stream_tail_reads",
    "Log requests sent with since plus a bounded tail (the cheap reopen).",
)
PARTIAL_LINES_REREAD = Counter(
    f"{PREFIX}_partial_lines_reread",
    "Split lines still incomplete when a window closed; re-read whole by the next window.",
)
TIMESTAMP_ERRORS = Counter(
    f"{PREFIX}_timestamp_parse_errors", "Log messages without a readable Docker timestamp."
)
CLOCK_BACKWARDS = Counter(
    f"{PREFIX}_clock_went_backwards",
    "New lines stamped earlier than the newest line of the same stream (the host clock "
    "stepped back): delivered.",
)
MONITOR_ERRORS = Counter(
    f"{PREFIX}_monitor_errors", "Errors in container monitors, by kind.", ["kind"]
)

# -- pipeline ----------------------------------------------------------------------------
QUEUE_RECORDS = Gauge(f"{PREFIX}_queue_records", "Records waiting in the delivery queue.")
QUEUE_BYTES = Gauge(f"{PREFIX}_queue_bytes", "Message bytes waiting in the delivery queue.")
QUEUE_CAPACITY_RECORDS = Gauge(
    f"{PREFIX}_queue_capacity_records", "Record capacity of the delivery queue."
)
QUEUE_CAPACITY_BYTES = Gauge(
    f"{PREFIX}_queue_capacity_bytes", "Byte capacity of the delivery queue."
)
QUEUE_BLOCKED_SECONDS = Counter(
    f"{PREFIX}_queue_blocked_seconds",
    "Time monitors spent blocked on a full queue (backpressure).",
)
RECORDS_DROPPED = Counter(
    f"{PREFIX}_records_dropped",
    "Records dropped by a configured drop policy (0 unless one is set).",
    ["reason"],
)

# -- sinks -------------------------------------------------------------------------------
SINK_BATCHES = Counter(
    f"{PREFIX}_sink_batches", "Batches handed to a sink, by outcome.", ["sink", "status"]
)
SINK_RECORDS = Counter(
    f"{PREFIX}_sink_records", "Records handed to a sink, by outcome.", ["sink", "status"]
)
SINK_SEND_SECONDS = Histogram(
    f"{PREFIX}_sink_send_duration_seconds",
    "Time a sink took to accept a batch.",
    ["sink"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SINK_RETRIES = Counter(
    f"{PREFIX}_sink_retries", "Send retries after a transient failure.", ["sink"]
)
SINK_REQUEST_SECONDS = Histogram(
    f"{PREFIX}_sink_request_duration_seconds",
    "Duration of one request of a network sink, by HTTP status ('error' = no response).",
    ["sink", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SINK_REQUEST_BYTES = Counter(
    f"{PREFIX}_sink_request_bytes",
    "Bytes of the request bodies a network sink sent (as sent: compressed), retries included.",
    ["sink"],
)
SINK_PUSH_BYTES = Histogram(
    f"{PREFIX}_sink_push_bytes",
    "Body bytes of each request a network sink built (as sent: compressed), counted once "
    "however often it was retried: _count is the pushes, _sum their bytes.",
    ["sink"],
    buckets=(4096, 16384, 65536, 131072, 262144, 524288, 786432, 1048576, 1572864, 2097152,
             4194304),
)
SINK_UP = Gauge(f"{PREFIX}_sink_up", "1 while the sink's last send succeeded, else 0.", ["sink"])
FILE_SINK_WRITE_ERRORS = Counter(
    f"{PREFIX}_file_sink_write_errors",
    "Failed writes of the file sink, by errno name (ENOSPC: disk full, EDQUOT: quota). "
    "Nothing of a failed write stays in the file; the batch is retried.",
    ["errno"],
)
SPOOL_BYTES = Gauge(f"{PREFIX}_spool_bytes", "Bytes held in a sink's disk spool.", ["sink"])
SPOOL_RECORDS = Gauge(f"{PREFIX}_spool_records", "Records held in a sink's disk spool.", ["sink"])
SPOOL_CAPACITY_BYTES = Gauge(
    f"{PREFIX}_spool_capacity_bytes", "Byte capacity of a sink's disk spool.", ["sink"]
)
DEAD_LETTER_RECORDS = Counter(
    f"{PREFIX}_dead_letter_records",
    "Records a sink rejected permanently, written to its dead-letter file.",
    ["sink"],
)
DELIVERY_LAG = Histogram(
    f"{PREFIX}_delivery_lag_seconds",
    "Now minus the record's Docker timestamp when a sink accepted it (up to 20 records "
    "spread over each delivery).",
    ["sink"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)

# -- positions ---------------------------------------------------------------------------
POSITION_SAVES = Counter(f"{PREFIX}_position_saves", "Saves of the positions file.", ["result"])
POSITIONS_TRACKED = Gauge(f"{PREFIX}_positions_containers", "Containers in the positions file.")

# -- loki --------------------------------------------------------------------------------
LOKI_LINES_TRUNCATED = Counter(
    f"{PREFIX}_loki_lines_truncated",
    "Lines cut to the Loki sink's max_line_bytes (Loki rejects longer entries).",
)
OTLP_LINES_TRUNCATED = Counter(
    f"{PREFIX}_otlp_lines_truncated",
    "Lines cut to the OTLP sink's max_line_bytes (Loki rejects longer entries).",
)
LABEL_VALUES_REFUSED = Counter(
    f"{PREFIX}_label_values_refused",
    "Streams sent without a label (Loki) or resource attribute (OTLP) because it had "
    "reached its sink's max_label_values distinct values.",
    ["sink", "label"],
)
SPOOL_CORRUPT_ENTRIES = Counter(
    f"{PREFIX}_spool_corrupt_entries",
    "Spool entries that failed their checksum on read, moved aside as *.corrupt.",
    ["sink"],
)

# -- stages ------------------------------------------------------------------------------
MULTILINE_MERGED = Counter(
    f"{PREFIX}_multiline_records_merged",
    "Records the multiline stage built from more than one line.",
)
MULTILINE_LINES = Counter(
    f"{PREFIX}_multiline_lines_merged", "Lines that went into merged multiline records."
)
MULTILINE_RELEASES = Counter(
    f"{PREFIX}_multiline_groups_released",
    "Multiline groups released, by why (start, timeout, max_lines, max_bytes, flush).",
    ["reason"],
)
MULTILINE_LABEL_ERRORS = Counter(
    f"{PREFIX}_multiline_label_errors",
    "Containers whose io.log_capturer.multiline.start label is not a valid regex (their "
    "lines are not merged by it).",
)
MULTILINE_HELD = Gauge(
    f"{PREFIX}_multiline_groups_held", "Multiline groups waiting for more lines."
)
JSON_PARSE = Counter(
    f"{PREFIX}_json_parse",
    "Messages seen by the parse_json stage, by result (parsed, not_json, invalid, too_deep).",
    ["result"],
)
REDACTIONS = Counter(
    f"{PREFIX}_redactions", "Secrets replaced by the redact stage, by rule.", ["rule"]
)

# -- reload ------------------------------------------------------------------------------
CONFIG_RELOADS = Counter(
    f"{PREFIX}_config_reloads",
    "Config reloads (SIGHUP), by result: applied, unchanged (nothing live changed), "
    "invalid (the running config stays), failed (an error while applying; see the log).",
    ["result"],
)
CONFIG_RESTART_PENDING = Gauge(
    f"{PREFIX}_config_restart_pending_keys",
    "Keys the config file changes that a reload cannot apply (they need a restart).",
)
