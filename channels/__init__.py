"""Channel providers. Each implements ``notefly.ports.Channel`` and is registered in
the ``notefly.channels`` entry-point group as ``<channel>.<provider>``."""
