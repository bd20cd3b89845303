"""Passive presentation-attack detection (MiniFASNet) on face frames."""
