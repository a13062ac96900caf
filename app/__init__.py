"""Emotion-recognition inference service."""
