"""Things tests, benchmarks and other projects import on purpose: the pytest plugin, a dropping proxy, media fixtures."""
