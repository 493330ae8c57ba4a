"""systemd unit and example configuration, shipped as package data."""
