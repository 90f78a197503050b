"""Consumers: Celery worker processes that load Keras models and run inference.

TensorFlow is imported only in this package, and only after the worker forks its children.
"""
