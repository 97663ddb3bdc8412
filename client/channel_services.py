"""What the channel routes of the client need, resolved when the app starts serving."""

from __future__ import annotations

from dataclasses import dataclass

from quart import current_app

from notefly.live import InboxFeed, InboxWatcher
from notefly.registrations import Registrations
from notefly.services import Directory
from notefly.unsubscribe import UnsubscribeLinks

EXTENSION = "notefly.channels"


@dataclass
class ChannelServices:
    registrations: Registrations
    directory: Directory
    feed: InboxFeed
    watcher: InboxWatcher
    links: UnsubscribeLinks
    heartbeat_seconds: float


def channel_services() -> ChannelServices:
    found: ChannelServices = current_app.extensions[EXTENSION]
    return found
