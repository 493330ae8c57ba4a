"""Outputs of a pipeline: encoded files, Y4M pipes, network streams, a window, JPEG previews.

One module per sink kind, all built on ``base.Sink`` (bounded queue, own
thread, drop-and-count, error state); ``sink_set.SinkSet`` is what the render
loop owns.
"""
