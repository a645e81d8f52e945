"""Stands in for a Python without dm_control: on PYTHONPATH it shadows the real package."""

raise ModuleNotFoundError("No module named 'dm_control'", name="dm_control")
