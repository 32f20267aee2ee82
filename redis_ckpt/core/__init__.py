"""The sans-IO core: flows that decide, yielding the commands they need. Imports no I/O library."""
