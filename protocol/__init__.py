"""Sans-IO control protocol: envelope, node parameters, causal rules. Imports no trio, no moderngl, no sockets."""
