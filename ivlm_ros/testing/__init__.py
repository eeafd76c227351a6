"""ROS-side test scaffolding (node process + probe node), shared by the ROS tests and the node benchmark.

Kept apart from `ivlm_core.testing` because ivlm_core never imports ROS.
"""
