"""Tracking: everything that talks to MLflow.

``store`` (where the store is, creating it safely, logging with retries), ``runs``
(the one run life cycle: endings, resume bookkeeping, the closing summary),
``artifacts`` (what a screening run logs), ``sweep`` (a sweep's parent run) and
``registry`` (selections as registered model versions). May import ``review``,
``formats``, ``pipeline`` and ``models``; never ``directions`` or ``apps``
(docs/architecture.md).
"""
