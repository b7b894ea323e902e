"""Process-wide concerns shared by every stage: thread settings, the progress bar, framework log noise."""
