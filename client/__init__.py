"""trio client library for the compositord control protocol."""
