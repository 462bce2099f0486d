"""Webhooks: subscriptions to the platform's topics, and the signed deliveries of its events to them."""
