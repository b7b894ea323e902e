"""`python -m stereodeploy ...` (and `torchrun -m stereodeploy ...`): the command line."""

from stereodeploy.cli.app import main

main()
