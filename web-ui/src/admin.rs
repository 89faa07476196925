//! Managing API tokens and users (admin scope only).

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use vigil_storage::auth::{AuthError, TokenInfo, User};
use vigil_storage::Scope;

use crate::api::{rfc3339_ms, ApiError};
use crate::auth::Caller;
use crate::AppState;

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::LastAdmin => ApiError::Conflict(e.to_string()),
            AuthError::Invalid(m) => ApiError::BadRequest(m),
            AuthError::NotFound(m) => ApiError::NotFound(format!("{m} not found")),
            other => ApiError::Storage(other.to_string()),
        }
    }
}

/// Runs a blocking auth-store call off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AuthError> + Send + 'static,
) -> Result<T, ApiError> {
    web::block(f)
        .await
        .map_err(|e| ApiError::Storage(e.to_string()))?
        .map_err(ApiError::from)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ApiToken {
    id: String,
    name: String,
    #[schema(example = "read")]
    scope: String,
    created: String,
    last_used: Option<String>,
}

impl From<TokenInfo> for ApiToken {
    fn from(t: TokenInfo) -> Self {
        Self {
            id: t.id,
            name: t.name,
            scope: t.scope.as_str().into(),
            created: rfc3339_ms(t.created_ms),
            last_used: t.last_used_ms.map(rfc3339_ms),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewToken {
    /// What the token is for, e.g. the central server's name.
    name: String,
    /// `read` (default) or `admin`.
    #[schema(example = "read")]
    scope: Option<String>,
}

/// A new token: `token` is shown this once and never again.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct CreatedToken {
    #[serde(flatten)]
    info: ApiToken,
    #[schema(example = "vigil_0a1b2c3d4e5f_…")]
    token: String,
}

/// API tokens (their secrets are never shown again after creation).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "admin",
    responses((status = 200, body = Vec<ApiToken>), (status = 403, body = crate::api::ErrorBody)))]
pub(crate) async fn list_tokens(
    state: web::Data<AppState>,
    caller: web::ReqData<Caller>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let list: Vec<ApiToken> = state.auth.tokens().into_iter().map(Into::into).collect();
    Ok(HttpResponse::Ok().json(list))
}

/// Creates an API token for a central server or script.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "admin", request_body = NewToken,
    responses((status = 201, body = CreatedToken), (status = 400, body = crate::api::ErrorBody),
        (status = 403, body = crate::api::ErrorBody)))]
pub(crate) async fn create_token(
    state: web::Data<AppState>,
    caller: web::ReqData<Caller>,
    body: web::Json<NewToken>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let NewToken { name, scope } = body.into_inner();
    let scope: Scope = scope.as_deref().unwrap_or("read").parse()?;
    let auth = state.auth.clone();
    let (info, token) = blocking(move || auth.create_token(&name, scope)).await?;
    tracing::info!(token = %info.id, name = %info.name, scope = scope.as_str(), by = ?caller.scope(), "API token created");
    Ok(HttpResponse::Created().json(CreatedToken {
        info: info.into(),
        token,
    }))
}

/// Revokes a token; requests with it fail from then on.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "admin",
    params(("id" = String, Path, description = "The token's id")),
    responses((status = 204), (status = 404, body = crate::api::ErrorBody),
        (status = 403, body = crate::api::ErrorBody)))]
pub(crate) async fn revoke_token(
    state: web::Data<AppState>,
    caller: web::ReqData<Caller>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let auth = state.auth.clone();
    let id = id.into_inner();
    let revoked = id.clone();
    blocking(move || auth.revoke_token(&id)).await?;
    tracing::info!(token = %revoked, "API token revoked");
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ApiUser {
    name: String,
    #[schema(example = "admin")]
    scope: String,
    created: String,
}

impl From<User> for ApiUser {
    fn from(u: User) -> Self {
        Self {
            name: u.name,
            scope: u.scope.as_str().into(),
            created: rfc3339_ms(u.created_ms),
        }
    }
}

#[utoipa::path(get, path = "/api/v1/users", tag = "admin",
    responses((status = 200, body = Vec<ApiUser>), (status = 403, body = crate::api::ErrorBody)))]
pub(crate) async fn list_users(
    state: web::Data<AppState>,
    caller: web::ReqData<Caller>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let auth = state.auth.clone();
    let users = blocking(move || auth.users().map_err(AuthError::from)).await?;
    let list: Vec<ApiUser> = users.into_iter().map(Into::into).collect();
    Ok(HttpResponse::Ok().json(list))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetUser {
    /// At least 8 characters.
    password: String,
    /// `read` or `admin`; left out: a new user gets `read`, an existing one
    /// keeps theirs.
    scope: Option<String>,
}

/// Creates a user or sets a new password and scope (their sessions end);
/// demoting the last admin is refused (409).
#[utoipa::path(put, path = "/api/v1/users/{name}", tag = "admin", request_body = SetUser,
    params(("name" = String, Path)),
    responses((status = 204), (status = 400, body = crate::api::ErrorBody),
        (status = 403, body = crate::api::ErrorBody), (status = 409, body = crate::api::ErrorBody)))]
pub(crate) async fn set_user(
    state: web::Data<AppState>,
    caller: web::ReqData<Caller>,
    name: web::Path<String>,
    body: web::Json<SetUser>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let SetUser { password, scope } = body.into_inner();
    let scope: Option<Scope> = scope.as_deref().map(str::parse).transpose()?;
    let auth = state.auth.clone();
    let name = name.into_inner();
    let user = name.clone();
    blocking(move || auth.set_user(&name, &password, scope)).await?;
    tracing::info!(%user, scope = scope.map_or("unchanged", Scope::as_str), "user saved");
    Ok(HttpResponse::NoContent().finish())
}

/// Deletes a user; the last admin cannot be deleted.
#[utoipa::path(delete, path = "/api/v1/users/{name}", tag = "admin",
    params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = crate::api::ErrorBody),
        (status = 409, body = crate::api::ErrorBody)))]
pub(crate) async fn delete_user(
    state: web::Data<AppState>,
    caller: web::ReqData<Caller>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let auth = state.auth.clone();
    let name = name.into_inner();
    let user = name.clone();
    blocking(move || auth.delete_user(&name)).await?;
    tracing::info!(%user, "user deleted");
    Ok(HttpResponse::NoContent().finish())
}
