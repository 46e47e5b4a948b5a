"""``python -m dltrain`` is the ``dltrain`` command."""

from dltrain.cli.app import main

if __name__ == "__main__":
    main()
