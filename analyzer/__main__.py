"""`python -m analyzer` is the `mqtt-keepalive` command."""

from analyzer.cli import main

if __name__ == "__main__":
    main()
