"""`python -m lenet_cli` runs the same app as the `lenet` command."""

from lenet_cli.cli.app import main

if __name__ == "__main__":
    main()
