"""The settlement service: applies engine events to the ledger, exactly once."""
