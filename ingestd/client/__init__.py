"""The terminal client (`smalltable post`, `get`, `tail`, `open`): SmallTable's HTTP API from a shell."""
