"""ivlm_ros: the ROS 2 node around ivlm_core's InteractVLM pipeline (conversion, scheduling, publishing)."""
