"""Webhook intake for every tracker: the one route, delivery dedupe, routing to the lifecycle."""
