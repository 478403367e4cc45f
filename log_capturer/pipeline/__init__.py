"""From monitors to sinks: records, the bounded queue, the dispatcher that acknowledges positions."""
