"""Keel: a reconciliation-based control plane and host agent (client side: keelctl, wire API)."""
