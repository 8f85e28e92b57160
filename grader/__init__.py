"""Autograder for the mixed-precision training course."""

__version__ = "0.1.0"
