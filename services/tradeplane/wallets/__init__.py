"""Custody: deposit watchers, withdrawals and reconciliation against chain nodes."""
