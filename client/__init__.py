"""The client service: users, subscriptions, inbox."""
