"""Integrations that ship with treadle, registered through the same entry points as plugins."""
