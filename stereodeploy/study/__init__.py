"""The study: metrics, evaluation loops, the framework comparison and its reports."""
