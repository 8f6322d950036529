"""Throughput benchmark of tigerwatch: one module per measurement, on a shared harness."""
