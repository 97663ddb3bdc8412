"""The export of a user's personal data: ``GET /users/<user_id>/export``.

Everything the store keeps about the user, as one JSON document: the profile, the
subscriptions with their schedules, the registered endpoints, the inbox, the
deliveries addressed to them and their digests. Credentials are left out: an
endpoint shows its label (what may be shown of its URL), never its URL or keys, and
the user's access token is stored only as a hash. ``DELETE /users/<user_id>`` erases
all of it.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint, Quart, current_app
from quart_schema import document_response

from client.api import ErrorOut, NotificationOut, SubscriptionOut, UserOut
from notefly.addresses import Endpoint
from notefly.containers import Container, resolve
from notefly.domain import Delivery
from notefly.personal import DigestRecord, PersonalData, PersonalDataStore, UserExport

blueprint = Blueprint("export", __name__)
EXTENSION = "notefly_personal_data"


class EndpointOut(BaseModel):
    id: str
    kind: Literal["webpush", "webhook", "apprise"]
    label: str = Field(description="What may be shown of the URL; credentials are masked")
    created_at: datetime | None

    @classmethod
    def of(cls, e: Endpoint) -> EndpointOut:
        return cls(id=e.id, kind=e.kind.value, label=e.label, created_at=e.created_at)


class UserDeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    message_id: str
    channel: str
    status: Literal["queued", "sent", "failed", "skipped"]
    attempts: int
    provider: str | None
    recipient: str | None
    subject: str | None
    text: str | None
    error: str | None
    mode: Literal["immediate", "digest"]
    note: str | None
    digest_id: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None

    @classmethod
    def of(cls, d: Delivery) -> UserDeliveryOut:
        return cls.model_validate(d)  # field by field, by name


class DigestOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    channel: str
    status: Literal["queued", "sent", "failed"]
    attempts: int
    items: int = Field(description="How many messages it carries")
    provider: str | None
    recipient: str | None
    subject: str | None
    text: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None

    @classmethod
    def of(cls, g: DigestRecord) -> DigestOut:
        return cls.model_validate(g)  # field by field, by name


class UserExportOut(BaseModel):
    """Everything kept about one user."""

    exported_at: datetime
    user: UserOut
    subscriptions: list[SubscriptionOut]
    endpoints: list[EndpointOut]
    notifications: list[NotificationOut] = Field(description="The inbox, newest first")
    deliveries: list[UserDeliveryOut] = Field(description="Newest first")
    digests: list[DigestOut] = Field(description="Newest first")

    @classmethod
    def of(cls, found: UserExport, at: datetime) -> UserExportOut:
        return cls(
            exported_at=at,
            user=UserOut.of(found.user),
            subscriptions=[SubscriptionOut.of(s) for s in found.subscriptions],
            endpoints=[EndpointOut.of(e) for e in found.endpoints],
            notifications=[NotificationOut.of(n) for n in found.notifications],
            deliveries=[UserDeliveryOut.of(d) for d in found.deliveries],
            digests=[DigestOut.of(g) for g in found.digests],
        )


def install(app: Quart, container: Container) -> None:
    @app.before_serving
    async def resolve_personal_data() -> None:
        store: PersonalDataStore = await resolve(container.store)
        app.extensions[EXTENSION] = (PersonalData(store), container.clock())

    app.register_blueprint(blueprint)


@blueprint.get("/users/<user_id>/export")
@document_response(UserExportOut)
@document_response(ErrorOut, 404)
async def export_user(user_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """All the personal data kept about the user, as JSON (a download)."""
    personal, clock = current_app.extensions[EXTENSION]
    found = await personal.export(user_id)
    body = UserExportOut.of(found, clock.now()).model_dump(mode="json")
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", found.user.id)
    disposition = f'attachment; filename="notefly-{safe}.json"'
    return body, 200, {"Content-Disposition": disposition, "Cache-Control": "no-store"}
