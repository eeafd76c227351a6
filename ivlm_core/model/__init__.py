"""InteractVLM network parts: SAM with multi-view prompting, camera encoder, token splitter, LLaVA model.

The modules load the released InteractVLM checkpoint layout directly, so a user can point ivlm at the
unzipped release folder without any conversion step.
"""
