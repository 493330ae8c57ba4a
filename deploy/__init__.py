"""Deployment files shipped with the package: the systemd unit."""
