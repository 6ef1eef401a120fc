"""TaskMaster benchmarks: throughput, latency, scaling, failover, read path (not timed tests)."""
