"""The broker's JSON schemas: validation of requests, shape of responses, OpenAPI."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator
from quart_schema.openapi import OpenAPIProvider

from notefly import validation
from notefly.apidocs import with_common_responses
from notefly.domain import Category, Delivery, Message, Priority
from notefly.services import PublishCommand

SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class PublishRequest(Strict):
    category: str = Field(min_length=1, max_length=64, description="Category id, e.g. finance")
    body: str = Field(min_length=1, max_length=10_000)
    title: str | None = Field(default=None, max_length=200)
    data: dict[str, Any] = Field(default_factory=dict, description="Values for templates")
    priority: Priority = Priority.NORMAL
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The same key within 24 hours is the same message",
    )
    deliver_at: AwareDatetime | None = Field(
        default=None, description="Hold the message until then (ISO 8601 with a zone)"
    )

    @field_validator("category")
    @classmethod
    def lower(cls, value: str) -> str:
        return value.lower()

    # A title and a key are one line; the body is text; data stays small and NUL-free.
    @field_validator("title", "idempotency_key")
    @classmethod
    def one_line(cls, value: str | None) -> str | None:
        return None if value is None else validation.printable(value)

    @field_validator("body")
    @classmethod
    def text(cls, value: str) -> str:
        return validation.text(value)

    @field_validator("data")
    @classmethod
    def template_data(cls, value: dict[str, Any]) -> dict[str, Any]:
        return validation.template_data(value)

    def command(self) -> PublishCommand:
        return PublishCommand(
            category=self.category,
            body=self.body,
            title=self.title,
            data=self.data,
            priority=self.priority,
            idempotency_key=self.idempotency_key,
            deliver_at=self.deliver_at,
        )


class PublishResponse(BaseModel):
    id: str
    category: str
    status: Literal["accepted"] = "accepted"
    accepted_at: datetime

    @classmethod
    def of(cls, message: Message) -> PublishResponse:
        return cls(id=message.id, category=message.category_id, accepted_at=message.accepted_at)


class DeliveryCountsOut(BaseModel):
    total: int
    queued: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0


class MessageOut(BaseModel):
    id: str
    category: str
    title: str | None
    body: str
    priority: Priority
    accepted_at: datetime
    status: Literal["accepted", "delivering", "delivered"]
    deliveries: DeliveryCountsOut


class DeliveryOut(BaseModel):
    id: str
    user: str
    channel: str
    status: Literal["queued", "sent", "failed", "skipped"]
    attempts: int
    provider: str | None
    provider_message_id: str | None
    recipient: str | None
    subject: str | None
    text: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    mode: Literal["immediate", "digest"] = "immediate"
    note: str | None = Field(default=None, description="Why it waits or was folded")
    digest_id: str | None = Field(default=None, description="The digest that carried it")

    @classmethod
    def of(cls, d: Delivery) -> DeliveryOut:
        return cls(
            id=d.id,
            user=d.user_id,
            channel=d.channel,
            status=d.status.value,
            attempts=d.attempts,
            provider=d.provider,
            provider_message_id=d.provider_message_id,
            recipient=d.recipient,
            subject=d.subject,
            text=d.text,
            error=d.error,
            created_at=d.created_at,
            updated_at=d.updated_at,
            sent_at=d.sent_at,
            mode=d.mode,  # type: ignore[arg-type]
            note=d.note,
            digest_id=d.digest_id,
        )


class DeliveriesOut(BaseModel):
    message_id: str
    deliveries: list[DeliveryOut]


class CategoryIn(Strict):
    id: str | None = Field(default=None, description="Slug; derived from the name if absent")
    name: str = Field(min_length=1, max_length=80)
    description: str = Field(default="", max_length=500)

    @field_validator("name")
    @classmethod
    def one_line(cls, value: str) -> str:
        return validation.printable(value)

    @field_validator("description")
    @classmethod
    def text(cls, value: str) -> str:
        return validation.text(value)

    @field_validator("id")
    @classmethod
    def slug(cls, value: str | None) -> str | None:
        if value is not None and not SLUG.match(value):
            raise ValueError("use lowercase letters, digits, '-' and '_' (at most 64)")
        return value

    @model_validator(mode="after")
    def derive_id(self) -> CategoryIn:
        if self.id is None:
            derived = re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")[:64]
            if not derived:
                raise ValueError("the name has no letters or digits to derive an id from")
            self.id = derived
        return self

    def category(self) -> Category:
        assert self.id is not None  # set by derive_id
        return Category(id=self.id, name=self.name, description=self.description)


class CategoryOut(BaseModel):
    id: str
    name: str
    description: str

    @classmethod
    def of(cls, c: Category) -> CategoryOut:
        return cls(id=c.id, name=c.name, description=c.description)


class CategoriesOut(BaseModel):
    categories: list[CategoryOut]


class HealthOut(BaseModel):
    status: Literal["ok"]
    service: str
    version: str


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorOut(BaseModel):
    error: ErrorDetail


class CommonResponses(OpenAPIProvider):
    """The OpenAPI of the routes, with what any route may answer documented on each."""

    def schema(self) -> dict[str, Any]:
        from broker.auth import ROUTES  # imported here: that module imports this one

        return with_common_responses(super().schema(), protected=ROUTES.protected)
