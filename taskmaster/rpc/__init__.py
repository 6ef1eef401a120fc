"""Generated gRPC code (from proto/). Regenerate with `python -m taskmaster.rpc.build`."""
