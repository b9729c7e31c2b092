//! `/admin/v2/tenants`: list, create, delete.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::error::{codes, ApiError, ApiResult};
use super::request::{done, ok, Params};
use super::Context;
use crate::service::namespaces;

/// `GET /admin/v2/tenants`: the tenants' names.
pub async fn list(State(context): State<Context>) -> ApiResult<Response> {
    Ok(ok(&namespaces::list_tenants(context.service.meta()).await?))
}

/// `PUT /admin/v2/tenants/{tenant}`.
pub async fn create(
    State(context): State<Context>,
    Params(tenant): Params<String>,
) -> ApiResult<Response> {
    if namespaces::create_tenant(context.service.meta(), &tenant).await? {
        Ok(done())
    } else {
        Err(ApiError::already_exists(format!(
            "tenant {tenant} already exists"
        )))
    }
}

/// `DELETE /admin/v2/tenants/{tenant}`: only once it has no namespaces.
pub async fn delete(
    State(context): State<Context>,
    Params(tenant): Params<String>,
) -> ApiResult<Response> {
    let meta = context.service.meta();
    namespaces::validate_segment("tenant", &tenant)?;
    if !namespaces::tenant_exists(meta, &tenant).await? {
        return Err(ApiError::tenant_not_found(&tenant));
    }
    let remaining = namespaces::list_namespaces(meta, &tenant).await?;
    if !remaining.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            codes::NOT_EMPTY,
            format!(
                "tenant {tenant} still has namespaces ({}); delete them first",
                remaining.join(", ")
            ),
        ));
    }
    namespaces::delete_tenant(meta, &tenant).await?;
    Ok(done())
}
