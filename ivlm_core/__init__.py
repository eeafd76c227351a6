"""ivlm_core: the ROS-free InteractVLM library (model, geometry, body models, fitting, pipeline)."""

__version__ = "0.1.0"
