"""Example pipelines and their assets, shipped as package data."""
