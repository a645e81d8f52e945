"""Stands in for a Python without gymnasium: on PYTHONPATH it shadows the real package."""

raise ModuleNotFoundError("No module named 'gymnasium'", name="gymnasium")
