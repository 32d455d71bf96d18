"""`python -m wsi_ncmi` runs the command-line interface."""

from wsi_ncmi.cli import main

main()
