"""Thin command-line layer: parse flags, call one operation, render its result."""
