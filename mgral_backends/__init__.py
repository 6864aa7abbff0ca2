"""Detector backends behind one protocol."""
