"""From monitors to sinks: records, the bounded queue, and the dispatcher."""
