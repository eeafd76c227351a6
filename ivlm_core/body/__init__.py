"""SMPL-X / SMPL-H body models (user-supplied files) and contact transfer between them."""
