"""Front-end — the steps a CLI command, a recipe and the Python API share: prune a file
(``steps``), run a recipe (``recipe``), quantize (``quantize``).
"""
