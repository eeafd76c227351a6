"""Cameras, rasterization, shading and 2D->3D lifting of the InteractVLM multi-view pipeline."""
