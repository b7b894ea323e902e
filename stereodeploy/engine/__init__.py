"""Inference engine: backends compute features; matching, SGM and filters turn them into disparity."""
