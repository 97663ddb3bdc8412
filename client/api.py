"""The client's JSON schemas: validation of requests, shape of responses, OpenAPI."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from quart_schema.openapi import OpenAPIProvider

from notefly import validation
from notefly.apidocs import with_common_responses
from notefly.domain import Category, Notification, Priority, Subscription, User
from notefly.schedule import WEEKDAYS, Frequency, Schedule, parse_clock, parse_weekday

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


class QuietHoursIn(Strict):
    """Non-urgent notifications wait until ``end``; the window may cross midnight."""

    start: str = Field(description="HH:MM, the user's local time", examples=["22:00"])
    end: str = Field(description="HH:MM, the user's local time", examples=["07:00"])

    @field_validator("start", "end")
    @classmethod
    def clock(cls, value: str) -> str:
        return parse_clock(value).strftime("%H:%M")

    def encode(self) -> str:
        return f"{self.start}-{self.end}"

    @classmethod
    def of(cls, value: str | None) -> QuietHoursIn | None:
        if value is None:
            return None
        start, end = value.split("-")
        return cls(start=start, end=end)


class UserIn(Strict):
    name: Name
    email: Email | None = None
    phone: Phone | None = None
    push_token: PushToken | None = None
    timezone: TimeZone = "UTC"
    quiet_hours: QuietHoursIn | None = None

    def user(self) -> User:
        # An empty id asks the directory for a generated one.
        return User(
            id="",
            name=self.name,
            email=self.email,
            phone=self.phone,
            push_token=self.push_token,
            timezone=self.timezone,
            quiet_hours=self.quiet_hours.encode() if self.quiet_hours else None,
        )


class UserPatch(Strict):
    """Any subset of the user's fields; ``null`` clears an address."""

    name: Name | None = None
    email: Email | None = None
    phone: Phone | None = None
    push_token: PushToken | None = None
    timezone: TimeZone | None = None
    quiet_hours: QuietHoursIn | None = None

    @field_validator("name", "timezone")
    @classmethod
    def required(cls, value: str | None) -> str:
        # Runs only for values sent: an absent field keeps its value, a null is refused.
        if value is None:
            raise ValueError("cannot be null")
        return value

    def changes(self) -> dict[str, Any]:
        changes = self.model_dump(exclude_unset=True)
        if "quiet_hours" in changes:
            changes["quiet_hours"] = self.quiet_hours.encode() if self.quiet_hours else None
        return changes


class UserOut(BaseModel):
    id: str
    name: str
    email: str | None
    phone: str | None
    push_token: str | None
    timezone: str
    quiet_hours: QuietHoursIn | None = None
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
            quiet_hours=QuietHoursIn.of(u.quiet_hours),
            created_at=u.created_at,
        )


class RegisteredOut(UserOut):
    token: str = Field(
        description="The user's access token (Authorization: Bearer …), shown only here"
    )


class TokenOut(BaseModel):
    user_id: str
    token: str = Field(description="The new access token; the previous one no longer works")


class UsersQuery(Strict):
    limit: int = Field(default=100, ge=1, le=500)


class UsersOut(BaseModel):
    users: list[UserOut]


class SubscribeIn(Strict):
    user: Id
    category: Id
    channels: list[ChannelName] = Field(min_length=1, max_length=32)
    frequency: Frequency | None = Field(
        default=None,
        description="immediate, or a digest: hourly, daily, weekly (absent: keep the current)",
    )
    at: str | None = Field(
        default=None, description="daily/weekly: HH:MM local", examples=["10:00"]
    )
    weekday: str | None = Field(default=None, description="weekly: e.g. friday")

    @field_validator("at")
    @classmethod
    def clock(cls, value: str | None) -> str | None:
        return None if value is None else parse_clock(value).strftime("%H:%M")

    @field_validator("weekday")
    @classmethod
    def day(cls, value: str | None) -> str | None:
        return None if value is None else WEEKDAYS[parse_weekday(value)]

    @model_validator(mode="after")
    def consistent(self) -> SubscribeIn:
        if self.frequency is None and (self.at or self.weekday):
            raise ValueError("'at' and 'weekday' go with a daily or weekly 'frequency'")
        if self.weekday and self.frequency is not Frequency.WEEKLY:
            raise ValueError("'weekday' goes with a weekly frequency")
        return self

    def schedule(self) -> Schedule | None:
        if self.frequency is None:
            return None
        at = parse_clock(self.at) if self.at else None
        weekday = parse_weekday(self.weekday) if self.weekday else None
        return Schedule(self.frequency, at, weekday)

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
    frequency: Frequency
    at: str | None = None
    weekday: str | None = None
    updated_at: datetime | None

    @classmethod
    def of(cls, s: Subscription) -> SubscriptionOut:
        schedule = Schedule.decode(s.schedule)
        weekly = schedule.frequency is Frequency.WEEKLY
        return cls(
            user=s.user_id,
            category=s.category_id,
            channels=list(s.channels),
            frequency=schedule.frequency,
            at=schedule.at.strftime("%H:%M") if schedule.at else None,
            weekday=WEEKDAYS[schedule.weekday or 0] if weekly else None,
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
    via: Literal["digest"] | None = Field(
        default=None, description="'digest': it reaches the user's channels in a digest"
    )

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
            via="digest" if n.via == "digest" else None,
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


class CommonResponses(OpenAPIProvider):
    """The OpenAPI of the routes, with what any route may answer documented on each."""

    def schema(self) -> dict[str, Any]:
        from client.auth import ROUTES  # imported here: that module imports this one

        return with_common_responses(super().schema(), protected=ROUTES.protected)
