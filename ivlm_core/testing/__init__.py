"""Test scaffolding that ships with the library: tiny random checkpoints in the released layout and synthetic
body models in the official file formats. Used by the tests, benchmarks and smoke demos; never by product code.
"""
