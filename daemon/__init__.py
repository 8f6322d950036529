"""tigerwatch: a watch-folder daemon that sorts camera-trap frames with CLIP."""

__version__ = "0.1.0"
