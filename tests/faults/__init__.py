"""The fault catalogue (a package: its conftest must not shadow tests/conftest.py)."""
