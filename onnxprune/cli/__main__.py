"""``python -m onnxprune.cli``: the same entry point as the ``onnxprune`` script."""

from onnxprune.cli.main import main

if __name__ == "__main__":
    main()
