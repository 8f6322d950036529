"""Decoding: image bytes to model-ready pixels in child processes; never imports torch."""
