"""Adapters that plug the engine-agnostic :mod:`eiou` core into detection frameworks.

The core (metrics, losses, coders, heads, scoring) never imports from here.
"""
