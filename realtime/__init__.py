"""The live host: block adaptation, resampling, latency accounting, audio I/O, chains, profiling."""
