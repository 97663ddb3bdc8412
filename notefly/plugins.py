"""Finding channel providers and services through entry points.

Providers register under the ``notefly.channels`` group as ``<channel>.<provider>``
(``email.log``, ``email.smtp``...); the configuration picks one per channel. A provider
factory takes ``Settings``; one that also declares an ``addresses`` parameter gets the
``AddressBook`` (the targets users registered: web push subscriptions, webhooks). The HTTP
services register under ``notefly.apps``, so the core never imports them.
"""

from __future__ import annotations

import inspect
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from notefly.addresses import AddressBook
from notefly.config import Settings
from notefly.errors import ConfigurationError
from notefly.ports import Channel

CHANNEL_GROUP = "notefly.channels"
APP_GROUP = "notefly.apps"


def _entry_points(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


def load_channels(settings: Settings, addresses: AddressBook | None = None) -> dict[str, Channel]:
    """Build the configured provider of every enabled channel, or fail with the reason."""
    available = _entry_points(CHANNEL_GROUP)
    channels: dict[str, Channel] = {}
    for name in settings.channels:
        provider = settings.provider_for(name)
        entry = available.get(f"{name}.{provider}")
        if entry is None:
            offered = sorted(k for k in available if k.startswith(f"{name}."))
            raise ConfigurationError(
                f"no provider {provider!r} for channel {name!r}"
                + (
                    f"; installed: {', '.join(offered)}"
                    if offered
                    else f"; no provider at all is installed for {name!r}"
                )
                + f" (set NOTEFLY_{name.upper()}_PROVIDER or NOTEFLY_CHANNELS)"
            )
        factory = entry.load()
        if "addresses" in inspect.signature(factory).parameters:
            if addresses is None:
                raise ConfigurationError(f"the {entry.name} provider needs the address book")
            channels[name] = factory(settings, addresses=addresses)
        else:
            channels[name] = factory(settings)
    return channels


def load_app_factory(name: str) -> Any:
    entry = _entry_points(APP_GROUP).get(name)
    if entry is None:
        raise ConfigurationError(f"the {name!r} service is not installed")
    return entry.load()
