"""``python -m onnxprune``: the same entry point as the ``onnxprune`` script."""

from onnxprune.cli.app import main

if __name__ == "__main__":
    main()
