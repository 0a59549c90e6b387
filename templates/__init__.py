"""Installed as the resource package ``bot.templates`` (see setup.py); holds no code."""
