"""Installed as the resource package ``bot.examples`` (see setup.py); holds no code."""
