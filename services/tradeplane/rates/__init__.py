"""The rates service (``tradeplane rates``): Convert's indicative rates and index prices,
published from the books for the gateway and as metrics."""
