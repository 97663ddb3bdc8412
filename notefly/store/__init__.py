"""Store adapters behind the ``notefly.ports.Store`` port."""
