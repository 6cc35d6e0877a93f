"""`python -m archspec.cli ...` runs the command line."""

from archspec.cli import main

main()
