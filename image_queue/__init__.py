"""image_queue: a bounded, auditable batch queue for paid image-generation APIs.

Kept import-free on purpose: workers and inspection commands import only what they use.
"""

__version__ = "0.1.0"
