"""`python -m archspec ...` runs the command line (the same as the `archspec` script)."""

from archspec.cli import main

main()
