"""Inputs read from disk in bulk: frames of a photo folder or a rosbag2, and evaluation sets (DAMON)."""
