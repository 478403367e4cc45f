"""Everything that talks to the Docker engine: the pooled client, its pool, and log streams."""
