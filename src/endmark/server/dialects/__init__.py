"""The dialects: one wire module (`*_protocol.py`) and one route module per API family."""
