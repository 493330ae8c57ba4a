"""Frame producers for compositor inputs; each yields ``SourceFrame`` objects (daemon/engine/render/frames.py)."""
