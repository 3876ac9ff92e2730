"""Alert notifications: what happened to the cluster (a node changing state, a self-heal's
outcome, and later degradation tiers and readiness runs), sent to the channels an operator
configured in the admin: a generic JSON webhook, Slack, a WeCom (企业微信) group robot, or
email. Delivered by Celery with retries and backoff, rate-limited per channel and subject so
a flapping node cannot flood a channel.

It imports nothing from the planes: they call `alerts.services.notify` with an `AlertEvent`."""
