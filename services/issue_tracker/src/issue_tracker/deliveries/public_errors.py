"""Errors of the delivery store that callers catch."""

__all__ = ["DeliveryStoreError"]


class DeliveryStoreError(Exception):
    """The store could not be reached or written; the webhook is answered 503 so GitHub can redeliver it."""
