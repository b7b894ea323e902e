"""Trainers: the shared loop (loop.py) and one small stepper per framework."""
