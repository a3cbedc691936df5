"""The package version, in a module of its own: every stage can read it without importing the package
facade (``onnxprune/__init__`` imports the API, i.e. every stage)."""

__version__ = "0.1.0"
