"""tradeplane: a Kubernetes-native cryptocurrency exchange platform."""

__version__ = "0.1.0"
