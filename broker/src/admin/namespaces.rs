//! `/admin/v2/namespaces`: list, create, delete, and the policies (retention, message TTL,
//! backlog quota). The policies are stored here; topics apply them.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::error::{codes, ApiError, ApiResult};
use super::request::{self, done, ok, Params};
use super::Context;
use crate::service::namespaces::{self, NamespacePolicies};

/// Backlog quota policies, by Pulsar's names.
pub const BACKLOG_POLICIES: [&str; 2] = ["producer_request_hold", "producer_exception"];

fn validate(tenant: &str, namespace: &str) -> ApiResult<()> {
    namespaces::validate_segment("tenant", tenant)?;
    namespaces::validate_segment("namespace", namespace)?;
    Ok(())
}

/// `GET /admin/v2/namespaces/{tenant}`: `tenant/namespace` names.
pub async fn list(
    State(context): State<Context>,
    Params(tenant): Params<String>,
) -> ApiResult<Response> {
    namespaces::validate_segment("tenant", &tenant)?;
    let meta = context.service.meta();
    if !namespaces::tenant_exists(meta, &tenant).await? {
        return Err(ApiError::tenant_not_found(&tenant));
    }
    Ok(ok(&namespaces::list_namespaces(meta, &tenant).await?))
}

/// `PUT /admin/v2/namespaces/{tenant}/{namespace}`, with an optional JSON body of policies.
pub async fn create(
    State(context): State<Context>,
    Params((tenant, namespace)): Params<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    validate(&tenant, &namespace)?;
    let policies: NamespacePolicies = request::optional_body(&body)?.unwrap_or_default();
    check_policies(&policies)?;
    let meta = context.service.meta();
    if !namespaces::tenant_exists(meta, &tenant).await? {
        return Err(ApiError::tenant_not_found(&tenant));
    }
    if namespaces::create_namespace(meta, &tenant, &namespace, &policies).await? {
        Ok(done())
    } else {
        Err(ApiError::already_exists(format!(
            "namespace {tenant}/{namespace} already exists"
        )))
    }
}

/// `DELETE /admin/v2/namespaces/{tenant}/{namespace}`: only once it has no topics.
pub async fn delete(
    State(context): State<Context>,
    Params((tenant, namespace)): Params<(String, String)>,
) -> ApiResult<Response> {
    validate(&tenant, &namespace)?;
    let meta = context.service.meta();
    namespaces::policies(meta, &tenant, &namespace).await?;
    let mut topics = super::topics::topic_names(meta, &tenant, &namespace).await?;
    topics.extend(
        namespaces::list_partitioned(meta, &tenant, &namespace)
            .await?
            .into_iter()
            .map(|(name, _)| name),
    );
    if !topics.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            codes::NOT_EMPTY,
            format!(
                "namespace {tenant}/{namespace} still has {} topic(s), e.g. {}; delete them first",
                topics.len(),
                topics[0]
            ),
        ));
    }
    namespaces::delete_namespace(meta, &tenant, &namespace).await?;
    Ok(done())
}

/// `GET /admin/v2/namespaces/{tenant}/{namespace}[/policies]`: every policy.
pub async fn policies(
    State(context): State<Context>,
    Params((tenant, namespace)): Params<(String, String)>,
) -> ApiResult<Response> {
    validate(&tenant, &namespace)?;
    Ok(ok(&namespaces::policies(
        context.service.meta(),
        &tenant,
        &namespace,
    )
    .await?))
}

/// Refuses policies no topic could apply.
fn check_policies(policies: &NamespacePolicies) -> ApiResult<()> {
    if !BACKLOG_POLICIES.contains(&policies.backlog_quota_policy.as_str()) {
        return Err(ApiError::invalid(format!(
            "backlog quota policy {:?} is unknown; use one of {}",
            policies.backlog_quota_policy,
            BACKLOG_POLICIES.join(", ")
        )));
    }
    if policies.bundles == 0 || policies.bundles > 1024 {
        return Err(ApiError::invalid("bundles must be from 1 to 1024"));
    }
    Ok(())
}

/// Reads the policies, changes them and writes them back (a compare-and-set: a concurrent
/// change makes this fail with SERVICE_UNAVAILABLE rather than be lost).
async fn update(
    context: &Context,
    tenant: &str,
    namespace: &str,
    change: impl FnOnce(&mut NamespacePolicies),
) -> ApiResult<()> {
    validate(tenant, namespace)?;
    let meta = context.service.meta();
    let mut policies = namespaces::policies(meta, tenant, namespace).await?;
    change(&mut policies);
    check_policies(&policies)?;
    namespaces::set_policies(meta, tenant, namespace, &policies).await?;
    Ok(())
}

/// Retention of consumed messages.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Retention {
    #[serde(alias = "retentionTimeInMinutes")]
    pub retention_minutes: u64,
    #[serde(alias = "retentionSizeInMB")]
    pub retention_size_mb: u64,
}

pub async fn get_retention(
    State(context): State<Context>,
    Params((tenant, namespace)): Params<(String, String)>,
) -> ApiResult<Response> {
    validate(&tenant, &namespace)?;
    let policies = namespaces::policies(context.service.meta(), &tenant, &namespace).await?;
    Ok(ok(&Retention {
        retention_minutes: policies.retention_minutes,
        retention_size_mb: policies.retention_size_mb,
    }))
}

/// `POST .../retention` with `{"retention_minutes": M, "retention_size_mb": S}`.
pub async fn set_retention(
    State(context): State<Context>,
    Params((tenant, namespace)): Params<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let retention: Retention = request::body(
        &body,
        r#"{"retention_minutes": 60, "retention_size_mb": 100}"#,
    )?;
    update(&context, &tenant, &namespace, |policies| {
        policies.retention_minutes = retention.retention_minutes;
        policies.retention_size_mb = retention.retention_size_mb;
    })
    .await?;
    Ok(done())
}

/// The message TTL, as a bare number of seconds (Pulsar's form) or an object.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(untagged)]
enum TtlBody {
    Seconds(u64),
    Object { message_ttl_seconds: u64 },
}

#[derive(Serialize)]
struct Ttl {
    message_ttl_seconds: u64,
}

pub async fn get_ttl(
    State(context): State<Context>,
    Params((tenant, namespace)): Params<(String, String)>,
) -> ApiResult<Response> {
    validate(&tenant, &namespace)?;
    let policies = namespaces::policies(context.service.meta(), &tenant, &namespace).await?;
    Ok(ok(&Ttl {
        message_ttl_seconds: policies.message_ttl_seconds,
    }))
}

/// `POST .../messageTTL` with `3600` or `{"message_ttl_seconds": 3600}` (0: never expire).
pub async fn set_ttl(
    State(context): State<Context>,
    Params((tenant, namespace)): Params<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let seconds = match request::body::<TtlBody>(&body, "3600")? {
        TtlBody::Seconds(seconds)
        | TtlBody::Object {
            message_ttl_seconds: seconds,
        } => seconds,
    };
    update(&context, &tenant, &namespace, |policies| {
        policies.message_ttl_seconds = seconds;
    })
    .await?;
    Ok(done())
}

/// The backlog quota: entries of backlog per subscription, and what happens beyond it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BacklogQuota {
    #[serde(alias = "backlog_quota_entries")]
    pub limit_entries: u64,
    #[serde(alias = "backlog_quota_policy")]
    pub policy: String,
}

pub async fn get_backlog_quota(
    State(context): State<Context>,
    Params((tenant, namespace)): Params<(String, String)>,
) -> ApiResult<Response> {
    validate(&tenant, &namespace)?;
    let policies = namespaces::policies(context.service.meta(), &tenant, &namespace).await?;
    Ok(ok(&BacklogQuota {
        limit_entries: policies.backlog_quota_entries,
        policy: policies.backlog_quota_policy,
    }))
}

/// `POST .../backlogQuota` with `{"limit_entries": N, "policy": "producer_exception"}`.
pub async fn set_backlog_quota(
    State(context): State<Context>,
    Params((tenant, namespace)): Params<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let quota: BacklogQuota = request::body(
        &body,
        r#"{"limit_entries": 100000, "policy": "producer_request_hold"}"#,
    )?;
    update(&context, &tenant, &namespace, |policies| {
        policies.backlog_quota_entries = quota.limit_entries;
        policies.backlog_quota_policy = quota.policy;
    })
    .await?;
    Ok(done())
}
