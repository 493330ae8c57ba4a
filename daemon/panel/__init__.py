"""The web panel: plain ES modules shipped as package data (no bundler, no dependencies).

``causal.js`` is the client half of PROTOCOL.md section 5 in JavaScript; the
daemon serves these files as they are.
"""
