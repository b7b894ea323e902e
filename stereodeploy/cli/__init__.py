"""The typer command line: each command parses its options, builds a config and calls one library function."""
