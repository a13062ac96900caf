"""Offline training package: load -> augment -> build -> fit -> evaluate -> export."""
