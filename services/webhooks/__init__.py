"""Webhooks: subscriptions to what happens to tasks, versions and aliases, and their deliveries.

``events`` (what can be announced, and ``emit``: in the transaction of the change), ``signing``
(the ``Strata-Signature`` header; ``verify`` is what a receiver calls), ``subscriptions`` (create,
list, change, delete) and ``delivery`` (what the workers run: claim what is due, POST it, retry
with backoff, disable a subscription that keeps failing). No FastAPI or Celery here.
"""
