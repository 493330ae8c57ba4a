"""Sound inside an engine: the bus format, the buffers sources fill, the mixer that reads them per frame."""
