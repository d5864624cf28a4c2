"""`saga.auth.v1.AuthService`: translation between protobuf and auth's domain modules, and
who a call acts for.

Calls that act for a user carry the gateway's (or, for GetProviderCredential, the router's
forwarded) `saga-context`, verified here: API-key management and linking an account need
that user's context (linking also accepts an operator's admin context); SetProviderKey
needs an admin context; Register needs an admin context unless `auth.self_registration` is
open (SPEC 3.2: closed by default, an operator creates the accounts); GetProviderCredential
for an `oauth_user` provider needs the context of the user whose token is asked for. The
certificate of the calling service alone is never enough to act for a user.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf import timestamp_pb2

from saga.auth.v1 import api_keys_pb2, auth_pb2, auth_pb2_grpc, users_pb2
from services.auth.accounts import Accounts
from services.auth.api_keys import ApiKey, KeyLimits, User
from services.auth.credential import API_KEY
from services.auth.provider_credentials import ProviderCredentials
from services.auth.signing_keys import SigningKeys
from services.auth.store import Store
from services.auth.user_listing import UserListing
from services.auth.users import Users
from services.common.context import ContextVerifier, RequestContext, metadata_token, public_jwk
from services.common.errors import FieldViolation, InvalidArgument, NotFound, PermissionDenied
from services.common.guard import Context

_KINDS = {"api_key": auth_pb2.CREDENTIAL_KIND_API_KEY, "jwt": auth_pb2.CREDENTIAL_KIND_JWT}
_PROVIDER_KINDS = {
    API_KEY: auth_pb2.PROVIDER_CREDENTIAL_KIND_API_KEY,
    "oauth_access_token": auth_pb2.PROVIDER_CREDENTIAL_KIND_OAUTH_ACCESS_TOKEN,
}


def _timestamp(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    if seconds is None:
        return None
    whole = int(seconds // 1)
    return timestamp_pb2.Timestamp(seconds=whole, nanos=int((seconds - whole) * 1e9))


def _seconds(ts: timestamp_pb2.Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def _expiry(request: auth_pb2.CreateApiKeyRequest) -> float | None:
    """The requested expiry in Unix seconds; None = never. A Timestamp whose nanos lie outside
    0..999,999,999 is malformed (protobuf's rule), not a time to round."""
    if not request.HasField("expires_at"):
        return None
    if not 0 <= request.expires_at.nanos < 1_000_000_000:
        raise InvalidArgument(
            "expires_at is not a valid timestamp",
            reason="EXPIRY_INVALID",
            field_violations=[FieldViolation("expires_at", "nanos must be 0..999,999,999")],
        )
    return _seconds(request.expires_at)


def _info(key: ApiKey) -> api_keys_pb2.ApiKeyInfo:
    return api_keys_pb2.ApiKeyInfo(
        key_id=key.key_id,
        name=key.name,
        prefix=key.prefix,
        scopes=key.scopes,
        created_at=_timestamp(key.created_at),
        expires_at=_timestamp(key.expires_at),
        revoked_at=_timestamp(key.revoked_at),
        last_used_at=_timestamp(key.last_used_at),
        limits=_limits(key.limits),
    )


def _user_info(user: User, scopes: tuple[str, ...], live_keys: int) -> users_pb2.UserInfo:
    return users_pb2.UserInfo(
        user_id=user.user_id,
        email=user.email or "",
        scopes=scopes,
        created_at=_timestamp(user.created_at),
        live_api_keys=live_keys,
    )


def _limits(limits: KeyLimits) -> api_keys_pb2.ApiKeyLimits:
    return api_keys_pb2.ApiKeyLimits(
        requests_per_minute=limits.requests_per_minute,
        concurrent_executions=limits.concurrent_executions,
    )


@dataclass(frozen=True)
class AuthParts:
    """The domain objects the servicer translates to."""

    context_keys: list[Ed25519PublicKey]
    contexts: ContextVerifier
    store: Store
    accounts: Accounts
    users: Users
    listing: UserListing
    signing_keys: SigningKeys
    providers: ProviderCredentials
    self_registration: str = "closed"
    """`auth.self_registration`: "open" lets anyone Register; "closed" only an admin."""


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    """The auth service."""

    def __init__(self, parts: AuthParts) -> None:
        self._p = parts

    async def _context(self, context: Context) -> RequestContext:
        return await self._p.contexts.verify(metadata_token(context.invocation_metadata()))

    async def _acting_for(
        self, context: Context, user_id: str, *, admin_may: bool = False
    ) -> RequestContext:
        """The verified request context of a call that acts for `user_id`: that user's own
        (or, where `admin_may`, an operator's with scope admin)."""
        verified = await self._context(context)
        if verified.user_id != user_id and not (admin_may and verified.has_scope("admin")):
            raise PermissionDenied(
                "the request context is for another user",
                reason="CONTEXT_MISMATCH",
                metadata={"userId": user_id[:64]},
            )
        return verified

    async def _admin(self, context: Context) -> RequestContext:
        verified = await self._context(context)
        if not verified.has_scope("admin"):
            raise PermissionDenied(
                "this call needs the scope 'admin'",
                reason="SCOPE_MISSING",
                metadata={"scope": "admin"},
            )
        return verified

    async def _registrar(self, context: Context) -> RequestContext:
        """The admin context that may create a user while self-registration is closed."""
        token = metadata_token(context.invocation_metadata())
        verified = None if token is None else await self._p.contexts.verify(token)
        if verified is None or not verified.has_scope("admin"):
            raise PermissionDenied(
                "self-registration is closed: an admin creates accounts (`saga register EMAIL` "
                'with an admin key), or the operator sets auth.self_registration = "open"',
                reason="REGISTRATION_CLOSED",
            )
        return verified

    async def Authenticate(
        self, request: auth_pb2.AuthenticateRequest, context: Context
    ) -> auth_pb2.AuthenticateResponse:
        """Verify an API key or an access token and say who it is."""
        principal = await self._p.accounts.authenticate(request.credential)
        return auth_pb2.AuthenticateResponse(
            principal=auth_pb2.Principal(
                user_id=principal.user_id,
                tenant=principal.tenant,
                scopes=principal.scopes,
                credential_id=principal.credential_id,
                kind=_KINDS[principal.kind],
                expires_at=_timestamp(principal.expires_at),
                limits=_limits(principal.limits),
            )
        )

    async def Register(
        self, request: auth_pb2.RegisterRequest, context: Context
    ) -> auth_pb2.RegisterResponse:
        """Create a user with a password: anyone's call when self-registration is open,
        otherwise only one with an admin's request context (checked before any hashing)."""
        if self._p.self_registration != "open":
            await self._registrar(context)
        user = await self._p.users.register(request.email, request.password)
        return auth_pb2.RegisterResponse(user_id=user.user_id, email=user.email or "")

    async def Login(
        self, request: auth_pb2.LoginRequest, context: Context
    ) -> auth_pb2.LoginResponse:
        """Exchange email and password for an access token."""
        issued = await self._p.users.login(request.email, request.password)
        return auth_pb2.LoginResponse(
            access_token=issued.token,
            expires_at=_timestamp(issued.expires_at),
            token_type="Bearer",  # noqa: S106 (the scheme's name)
        )

    async def CreateApiKey(
        self, request: auth_pb2.CreateApiKeyRequest, context: Context
    ) -> auth_pb2.CreateApiKeyResponse:
        """Create a key for the user the request context speaks for."""
        actor = await self._acting_for(context, request.user_id)
        secret, key = await self._p.accounts.create(
            request.user_id,
            request.name,
            list(request.scopes),
            _expiry(request),
            held=actor.scopes,
        )
        return auth_pb2.CreateApiKeyResponse(api_key=secret, info=_info(key))

    async def ListApiKeys(
        self, request: auth_pb2.ListApiKeysRequest, context: Context
    ) -> auth_pb2.ListApiKeysResponse:
        """A user's keys, without their secrets (that user's context or an admin's)."""
        await self._acting_for(context, request.user_id, admin_may=True)
        keys = await self._p.accounts.keys(request.user_id)
        return auth_pb2.ListApiKeysResponse(keys=[_info(k) for k in keys])

    async def RevokeApiKey(
        self, request: auth_pb2.RevokeApiKeyRequest, context: Context
    ) -> auth_pb2.RevokeApiKeyResponse:
        """Revoke one of a user's keys (that user's context or an admin's)."""
        await self._acting_for(context, request.user_id, admin_may=True)
        key = await self._p.accounts.revoke(request.user_id, request.key_id)
        return auth_pb2.RevokeApiKeyResponse(info=_info(key))

    async def ListUsers(
        self, request: auth_pb2.ListUsersRequest, context: Context
    ) -> auth_pb2.ListUsersResponse:
        """Every user, oldest first, a page at a time (an admin's request context required)."""
        await self._admin(context)
        page, token = await self._p.listing.page(request.page_size, request.page_token)
        return auth_pb2.ListUsersResponse(
            users=[_user_info(*listed) for listed in page], next_page_token=token
        )

    async def SetApiKeyLimits(
        self, request: auth_pb2.SetApiKeyLimitsRequest, context: Context
    ) -> auth_pb2.SetApiKeyLimitsResponse:
        """Set any key's own rate limits (an admin's request context required)."""
        await self._admin(context)
        key = await self._p.accounts.set_limits(
            request.key_id,
            KeyLimits(request.requests_per_minute, request.concurrent_executions),
        )
        return auth_pb2.SetApiKeyLimitsResponse(info=_info(key))

    async def GetJwks(
        self, request: auth_pb2.GetJwksRequest, context: Context
    ) -> auth_pb2.GetJwksResponse:
        """Publish the verification keys: the gateway's context key and auth's signing
        keys, old ones until their last token has expired (no secret: callable by the
        gateway, router and runtime)."""
        keys = [*self._p.context_keys, *await self._p.signing_keys.published()]
        return auth_pb2.GetJwksResponse(keys=[auth_pb2.Jwk(**public_jwk(k)) for k in keys])

    async def SetProviderKey(
        self, request: auth_pb2.SetProviderKeyRequest, context: Context
    ) -> auth_pb2.SetProviderKeyResponse:
        """Store an operator's provider key (an admin's request context required)."""
        await self._admin(context)
        version = await self._p.providers.set_key(request.provider, request.api_key)
        return auth_pb2.SetProviderKeyResponse(version=version)

    async def LinkProviderAccount(
        self, request: auth_pb2.LinkProviderAccountRequest, context: Context
    ) -> auth_pb2.LinkProviderAccountResponse:
        """Store a user's refresh token (that user's request context, or an admin's)."""
        self._p.providers.provider(request.provider)  # an unknown provider first
        await self._acting_for(context, request.user_id, admin_may=True)
        if await self._p.store.user(request.user_id) is None:
            raise NotFound("no such user", reason="USER_NOT_FOUND")
        version = await self._p.providers.link_account(
            request.provider, request.user_id, request.refresh_token, list(request.scopes)
        )
        return auth_pb2.LinkProviderAccountResponse(version=version)

    async def GetProviderCredential(
        self, request: auth_pb2.GetProviderCredentialRequest, context: Context
    ) -> auth_pb2.GetProviderCredentialResponse:
        """The credential the router calls a provider with; a user's OAuth token only with
        that user's request context."""
        provider = self._p.providers.provider(request.provider)
        if provider.credential == "oauth_user":
            await self._acting_for(context, request.user_id)
        credential = await self._p.providers.credential(request.provider, request.user_id)
        return auth_pb2.GetProviderCredentialResponse(
            kind=_PROVIDER_KINDS[credential.kind],
            secret=credential.secret,
            expires_at=_timestamp(credential.expires_at),
            version=credential.version,
        )
