"""A module-level DjangoSentinel, as applications write it."""
from sentinel.integrations.django import DjangoSentinel

sentinel = DjangoSentinel(namespace="shop")


def charge(order_id):
    return sentinel.once(f"charge-{order_id}", lambda: {"charged": order_id})
