"""Eventing: CloudEvents Brokers and Triggers, their durable storage, delivery to subscribers, and sources."""
