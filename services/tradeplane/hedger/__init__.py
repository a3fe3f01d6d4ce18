"""The hedger (``tradeplane hedger``): works off the convert desk's hedge queue (IOC orders
for the desk on our books), with backoff, a delivery limit and a dead-letter stream."""
