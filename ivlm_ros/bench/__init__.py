"""Benchmarks of the ROS layer (scripts that print figures; never run as timed tests)."""
