"""Headless benchmark runner (`compositord bench`)."""
