"""Runs the throughput benchmark: `python -m bench` is `python -m bench.throughput`."""

from bench.throughput import main

raise SystemExit(main())
