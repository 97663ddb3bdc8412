"""The client's JSON schemas: validation of requests, shape of responses, OpenAPI."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from notefly import validation
from notefly.domain import Category, Notification, Priority, Subscription, User

Name = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(validation.printable)]
Email = Annotated[
    str,
    Field(min_length=3, max_length=254, json_schema_extra={"format": "email"}),
    AfterValidator(validation.email),
]
Phone = Annotated[
    str,
    Field(
        description="E.164, e.g. +14155550123",
        json_schema_extra={"pattern": "^" + validation.PHONE.pattern + "$"},
    ),
    AfterValidator(validation.phone),
]
PushToken = Annotated[str, Field(min_length=1, max_length=4096)]
TimeZone = Annotated[
    str,
    Field(min_length=1, max_length=64, description="IANA name"),
    AfterValidator(validation.timezone),
]
Id = Annotated[str, Field(min_length=1, max_length=200)]
ChannelName = Annotated[str, Field(min_length=1, max_length=32)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class UserIn(Strict):
    name: Name
    email: Email | None = None
    phone: Phone | None = None
    push_token: PushToken | None = None
    timezone: TimeZone = "UTC"

    def user(self) -> User:
        # An empty id asks the directory for a generated one.
        return User(
            id="",
            name=self.name,
            email=self.email,
            phone=self.phone,
            push_token=self.push_token,
            timezone=self.timezone,
        )


class UserPatch(Strict):
    """Any subset of the user's fields; ``null`` clears an address."""

    name: Name | None = None
    email: Email | None = None
    phone: Phone | None = None
    push_token: PushToken | None = None
    timezone: TimeZone | None = None

    @field_validator("name", "timezone")
    @classmethod
    def required(cls, value: str | None) -> str:
        # Runs only for values sent: an absent field keeps its value, a null is refused.
        if value is None:
            raise ValueError("cannot be null")
        return value

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


class UserOut(BaseModel):
    id: str
    name: str
    email: str | None
    phone: str | None
    push_token: str | None
    timezone: str
    created_at: datetime | None

    @classmethod
    def of(cls, u: User) -> UserOut:
        return cls(
            id=u.id,
            name=u.name,
            email=u.email,
            phone=u.phone,
            push_token=u.push_token,
            timezone=u.timezone,
            created_at=u.created_at,
        )


class UsersQuery(Strict):
    limit: int = Field(default=100, ge=1, le=500)


class UsersOut(BaseModel):
    users: list[UserOut]


class SubscribeIn(Strict):
    user: Id
    category: Id
    channels: list[ChannelName] = Field(min_length=1, max_length=32)

    @field_validator("category")
    @classmethod
    def lower(cls, value: str) -> str:
        return value.lower()

    @field_validator("channels")
    @classmethod
    def unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("name each channel once")
        return value


class UnsubscribeIn(Strict):
    user: Id
    category: Id

    @field_validator("category")
    @classmethod
    def lower(cls, value: str) -> str:
        return value.lower()


class SubscriptionOut(BaseModel):
    user: str
    category: str
    channels: list[str]
    updated_at: datetime | None

    @classmethod
    def of(cls, s: Subscription) -> SubscriptionOut:
        return cls(
            user=s.user_id,
            category=s.category_id,
            channels=list(s.channels),
            updated_at=s.updated_at,
        )


class SubscriptionsOut(BaseModel):
    subscriptions: list[SubscriptionOut]


class NotificationsQuery(Strict):
    unread: bool = Field(default=False, description="Only unread notifications")
    limit: int = Field(default=50, ge=1, le=200)
    before: Id | None = Field(default=None, description="A notification id: the page after it")


class NotificationOut(BaseModel):
    id: str
    message_id: str
    category: str
    title: str | None
    body: str
    priority: Priority
    created_at: datetime
    read: bool
    read_at: datetime | None

    @classmethod
    def of(cls, n: Notification) -> NotificationOut:
        return cls(
            id=n.id,
            message_id=n.message_id,
            category=n.category_id,
            title=n.title,
            body=n.body,
            priority=n.priority,
            created_at=n.created_at,
            read=n.read_at is not None,
            read_at=n.read_at,
        )


class NotificationsOut(BaseModel):
    notifications: list[NotificationOut]
    next_before: str | None = Field(description="Pass as ?before= for the next page")


class MarkedOut(BaseModel):
    marked: int


class CategoryOut(BaseModel):
    id: str
    name: str
    description: str

    @classmethod
    def of(cls, c: Category) -> CategoryOut:
        return cls(id=c.id, name=c.name, description=c.description)


class CategoriesOut(BaseModel):
    categories: list[CategoryOut]


class ChannelsOut(BaseModel):
    channels: list[str]


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
