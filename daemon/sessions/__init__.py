"""The actions of the protocol (docs/PROTOCOL.md section 3), split by concern, on the control process's trio thread."""
