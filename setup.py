"""Package layout for setuptools; everything else is in pyproject.toml.

This lives here because pyproject.toml can either discover packages or list them, not both:
the code packages are discovered (a new subpackage cannot be forgotten, as bot.models once was),
while templates/ and examples/ stay at the repository root (DESIGN.md §2) and are installed as
the resource packages bot.templates and bot.examples, which the code finds with importlib.
"""

from __future__ import annotations

from setuptools import find_namespace_packages, setup

#: resource package -> the root-level directory it is built from
RESOURCES = {"bot.templates": "templates", "bot.examples": "examples"}

CODE = find_namespace_packages(
    include=["bot", "bot.*", "handlers", "handlers.*"], exclude=["*.__pycache__"]
)

setup(packages=[*CODE, *RESOURCES], package_dir=RESOURCES)
