"""compositord test suite and its pytest plugin (fixtures for other projects)."""
