"""Frame producers for compositor inputs; each yields ``SourceFrame`` objects (daemon/render/frames.py)."""
