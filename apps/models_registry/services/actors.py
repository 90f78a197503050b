"""Who acts on the registry: the user a service is given, as events record it and as it is checked.

`user=None` means a trusted caller (a management command run by an operator, the platform
itself): it is recorded as "system" and passes every permission check.
"""

import getpass
import os
from typing import TYPE_CHECKING, TypeAlias

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, PermissionsMixin
from django.core.exceptions import PermissionDenied

if TYPE_CHECKING:  # the AUTH_USER_MODEL, as django-stubs advises
    from django.contrib.auth.models import User as Account

User: TypeAlias = AbstractBaseUser | AnonymousUser | None


def actor_name(*, user: User) -> str:
    """The name an event records: the user's, or "system" for a trusted caller."""
    return user.get_username() if user is not None and user.is_authenticated else "system"


def actor_default() -> str:
    """Who runs a management command, for the history: the OS user."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (some containers)
        return f"uid:{os.getuid()}"


def actor_account(*, user: User) -> "Account | None":
    """The account a row points at (`created_by`, `deployed_by`); none for anonymous or trusted."""
    return user if isinstance(user, get_user_model()) else None


def actor_permission_require(*, user: User, perm: str) -> None:
    if user is None:
        return
    if not (isinstance(user, PermissionsMixin | AnonymousUser) and user.has_perm(perm)):
        raise PermissionDenied(f"requires the {perm} permission")


def actor_superuser_require(*, user: User, what: str) -> None:
    if user is None:
        return
    if not (isinstance(user, PermissionsMixin) and user.is_superuser):
        raise PermissionDenied(f"{what} requires a superuser")
