"""Demo tools for the local platform (a market maker that keeps the books alive)."""
