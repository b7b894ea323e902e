"""`python -m stereodeploy ...` (and `torchrun -m stereodeploy ...`): the command line."""

from stereodeploy.cli import main

main()
