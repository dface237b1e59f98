"""`python -m bike_cli` runs the `bike` command."""

from bike_cli.cli.app import main

if __name__ == "__main__":
    main()
