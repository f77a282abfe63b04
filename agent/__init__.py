"""Keel host agent: sync client, reconciler and runtime drivers."""
