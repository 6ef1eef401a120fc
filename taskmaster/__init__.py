"""TaskMaster: a distributed task scheduler on PostgreSQL and gRPC."""

__version__ = "0.1.0"
