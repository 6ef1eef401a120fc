"""The coordinator: worker registry, assignment, status writes, failure detection."""
