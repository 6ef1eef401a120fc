"""Start and control a whole stack: local processes or docker compose."""
