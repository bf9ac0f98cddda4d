"""Packaging shim: everything is declared in pyproject.toml (``pip install .`` reads it there).

Kept at the top level for tools and users that look for ``setup.py``.
"""

from setuptools import setup

setup()
