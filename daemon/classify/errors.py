"""The error a model that cannot be loaded raises: importable without torch or transformers."""


class ModelLoadError(Exception):
    """The model could not be loaded; the message says what was tried and how to fix it."""
