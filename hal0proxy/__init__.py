"""hal0proxy: a fast OpenAI-compatible reverse proxy in front of Lemonade Server."""

__version__ = "0.1.0"
