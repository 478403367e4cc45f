"""Finding the containers to capture: listing, the /events stream, and filters."""
