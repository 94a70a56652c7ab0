"""The peer of the per-turn benchmark: django-ai-assistant, driven in a virtualenv of its own (``driver.py``)."""
