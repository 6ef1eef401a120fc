"""The scheduler: HTTP API, SSE feed, stats."""
