"""Toy model placeholder (filled in below)."""
