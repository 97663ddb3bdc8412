"""The broker service: publishing, fan-out, delivery status."""
