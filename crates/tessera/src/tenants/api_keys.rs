//! API keys: long-lived credentials of a tenant for services that call Tessera or are called
//! with them. A key is `tsk_` + 192 random bits + a checksum (recognisable offline by secret
//! scanners), shown once and stored as its SHA-256. It carries a subset of its creator's
//! permissions in the tenant, optionally a CIDR list, an expiry, and is revoked or rotated
//! (with an overlap) at once on every replica.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::policy::{self, limit_reached};
use super::{TenantStatus, info, require};
use crate::audit::{self, Entry, action};
use crate::authz::{ApiKeyPrincipal, Principal, TenantPermission};
use crate::clock::rfc3339;
use crate::context::RequestContext;
use crate::core::Core;
use crate::crypto::{checked_token_ok, new_checked_token, token_hash};
use crate::error::{Error, Result};
use crate::events::{self, ApiKeyCreatedV1, ApiKeyRevokedV1};
use crate::store::api_keys::{self as store, ApiKeyRow, NewApiKey};

/// The recognisable prefix of API keys.
pub const PREFIX: &str = "tsk_";

/// Whether `token` looks like an API key (the checksum is checked in [`authenticate`]).
pub fn is_api_key(token: &str) -> bool {
    token.starts_with(PREFIX)
}

/// A key as listed: never the secret.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    /// The key's first characters, to recognise it.
    pub hint: String,
    pub permissions: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_cidrs: Option<Vec<String>>,
    pub created_by: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub last_used_ip: Option<String>,
    /// The key that replaced this one (which keeps working until `expires_at`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotated_to: Option<String>,
}

impl From<&ApiKeyRow> for ApiKeyView {
    fn from(r: &ApiKeyRow) -> Self {
        Self {
            id: r.id.clone(),
            name: r.name.clone(),
            hint: r.hint.clone(),
            permissions: split(&r.permissions),
            allowed_cidrs: r.allowed_cidrs.as_deref().map(split),
            created_by: r.created_by.clone(),
            created_at: rfc3339(r.created_at),
            expires_at: r.expires_at.map(rfc3339),
            last_used_at: r.last_used_at.map(rfc3339),
            last_used_ip: r.last_used_ip.clone(),
            rotated_to: r.rotated_to.clone(),
        }
    }
}

fn split(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// A new key: the view and, once, the secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub view: ApiKeyView,
    /// The secret: shown only in this answer.
    pub key: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub name: String,
    pub permissions: Vec<String>,
    /// RFC 3339 or Unix seconds; in the future.
    #[serde(default)]
    pub expires_at: Option<serde_json::Value>,
    #[serde(default)]
    pub allowed_cidrs: Option<Vec<String>>,
}

fn parse_expiry(v: &serde_json::Value, now: i64) -> Result<i64> {
    let at = match v {
        serde_json::Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| Error::invalid("expires_at", "must be Unix seconds or RFC 3339"))?,
        serde_json::Value::String(s) => audit::parse_time("expires_at", s)?,
        _ => {
            return Err(Error::invalid(
                "expires_at",
                "must be Unix seconds or RFC 3339",
            ));
        }
    };
    if at <= now {
        return Err(Error::invalid("expires_at", "must be in the future"));
    }
    if at > now + 10 * 366 * 24 * 3600 {
        return Err(Error::invalid("expires_at", "must be within ten years"));
    }
    Ok(at)
}

/// `POST /tenants/{id}/api-keys` (`api_keys:manage`): the key's permissions must be known in
/// the tenant and held by the caller.
pub async fn create(
    core: &Core,
    principal: &Principal,
    tenant_id: &str,
    input: CreateKey,
    ctx: &RequestContext,
    now: i64,
) -> Result<CreatedKey> {
    let caller = require(core, principal, tenant_id, TenantPermission::ApiKeysManage).await?;
    // RFC 9470: a new long-lived secret needs a recent, strong enough sign-in of a person.
    if let Principal::User(user) = principal {
        let recent = Some(crate::mfa::step_up::ACCOUNT_SECS);
        crate::mfa::step_up::require(core, user, recent, now).await?;
    }
    let tenant = info(core, tenant_id).await?.ok_or(Error::NotFound)?;
    let name = input.name.trim();
    if name.is_empty() {
        return Err(Error::invalid("name", "must be 1 to 100 characters"));
    }
    crate::accounts::validate_text("name", name, 100)?;
    let mut permissions = input.permissions.clone();
    permissions.sort();
    permissions.dedup();
    if permissions.is_empty() {
        return Err(Error::invalid(
            "permissions",
            "give at least one permission",
        ));
    }
    for p in &permissions {
        let known = TenantPermission::parse(p).is_some() || tenant.app_permissions.contains(p);
        if !known {
            return Err(Error::invalid(
                "permissions",
                format!("unknown permission {p:?}"),
            ));
        }
        if !caller.has(p) {
            return Err(Error::Forbidden {
                code: crate::error::Code::Forbidden,
                message: "a key's permissions must be a subset of your own",
            });
        }
    }
    let expires_at = input
        .expires_at
        .as_ref()
        .map(|v| parse_expiry(v, now))
        .transpose()?;
    let cidrs = match &input.allowed_cidrs {
        Some(list) if !list.is_empty() => Some(
            policy::parse_cidrs("allowed_cidrs", list)?
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => None,
    };
    let db = core.store.pool();
    if store::count_active(db, tenant_id, now).await? >= tenant.limits().max_api_keys {
        return Err(limit_reached("the tenant's plan allows no more API keys"));
    }
    let spec = KeySpec {
        name,
        permissions: &permissions.join(" "),
        allowed_cidrs: cidrs.as_deref(),
        expires_at,
    };
    let mut tx = core.store.begin().await?;
    let created = insert_in(&mut tx, principal, tenant_id, &spec, None, ctx, now).await?;
    tx.commit().await?;
    Ok(created)
}

struct KeySpec<'a> {
    name: &'a str,
    permissions: &'a str,
    allowed_cidrs: Option<&'a str>,
    expires_at: Option<i64>,
}

async fn insert_in(
    tx: &mut crate::store::Tx,
    principal: &Principal,
    tenant_id: &str,
    spec: &KeySpec<'_>,
    rotated_from: Option<&str>,
    ctx: &RequestContext,
    now: i64,
) -> Result<CreatedKey> {
    let key = new_checked_token(PREFIX);
    let id = uuid::Uuid::now_v7().to_string();
    let hint = key[..PREFIX.len() + 6].to_string();
    let created_by = match principal {
        Principal::User(u) => Some(u.user_id.clone()),
        Principal::ApiKey(k) => Some(format!("api_key:{}", k.key_id)),
        Principal::Client(_) | Principal::System => None,
    };
    let row = ApiKeyRow {
        id: id.clone(),
        tenant_id: tenant_id.to_string(),
        name: spec.name.to_string(),
        hint,
        secret_hash: token_hash(&key),
        permissions: spec.permissions.to_string(),
        allowed_cidrs: spec.allowed_cidrs.map(str::to_string),
        created_by,
        created_at: now,
        expires_at: spec.expires_at,
        revoked_at: None,
        rotated_to: None,
        last_used_at: None,
        last_used_ip: None,
    };
    store::insert(
        &mut **tx,
        &NewApiKey {
            id: &row.id,
            tenant_id,
            name: &row.name,
            hint: &row.hint,
            secret_hash: &row.secret_hash,
            permissions: &row.permissions,
            allowed_cidrs: row.allowed_cidrs.as_deref(),
            created_by: row.created_by.as_deref(),
            now,
            expires_at: row.expires_at,
        },
    )
    .await?;
    let act = if rotated_from.is_some() {
        action::ROTATE_API_KEY
    } else {
        action::CREATE_API_KEY
    };
    let entry = Entry::success(principal.actor(), act)
        .target("api_key", &id)
        .tenant(tenant_id);
    audit::record(&mut **tx, ctx, &entry, now).await?;
    events::append(
        tx,
        ctx,
        &ApiKeyCreatedV1 {
            tenant_id: tenant_id.to_string(),
            key_id: id.clone(),
            name: row.name.clone(),
            permissions: split(&row.permissions),
            created_by: row.created_by.clone(),
            rotated_from: rotated_from.map(str::to_string),
        },
        now,
    )
    .await?;
    Ok(CreatedKey {
        view: ApiKeyView::from(&row),
        key,
    })
}

/// `GET /tenants/{id}/api-keys` (`api_keys:manage`): the live keys.
pub async fn list(core: &Core, principal: &Principal, tenant_id: &str) -> Result<Vec<ApiKeyView>> {
    require(core, principal, tenant_id, TenantPermission::ApiKeysManage).await?;
    let now = core.clock.now();
    Ok(store::live_of(core.store.pool(), tenant_id, now)
        .await?
        .iter()
        .map(ApiKeyView::from)
        .collect())
}

/// `DELETE /tenants/{id}/api-keys/{key_id}` (`api_keys:manage`): refused at once everywhere.
pub async fn revoke(
    core: &Core,
    principal: &Principal,
    tenant_id: &str,
    key_id: &str,
    ctx: &RequestContext,
    now: i64,
) -> Result<()> {
    require(core, principal, tenant_id, TenantPermission::ApiKeysManage).await?;
    let row = store::find(core.store.pool(), tenant_id, key_id)
        .await?
        .ok_or(Error::NotFound)?;
    let mut tx = core.store.begin().await?;
    if !store::revoke(&mut *tx, tenant_id, key_id, now).await? {
        return Err(Error::NotFound);
    }
    let entry = Entry::success(principal.actor(), action::REVOKE_API_KEY)
        .target("api_key", key_id)
        .tenant(tenant_id);
    audit::record(&mut *tx, ctx, &entry, now).await?;
    events::append(
        &mut tx,
        ctx,
        &ApiKeyRevokedV1 {
            tenant_id: tenant_id.to_string(),
            key_id: key_id.to_string(),
        },
        now,
    )
    .await?;
    tx.commit().await?;
    core.tenants.key_changed(&row.secret_hash).await;
    Ok(())
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    /// Seconds the old key keeps working (default 86400, at most 30 days; 0 ends it now).
    #[serde(default)]
    pub overlap_seconds: Option<i64>,
}

/// `POST /tenants/{id}/api-keys/{key_id}/rotate` (`api_keys:manage`): a new key with the same
/// name, permissions, CIDRs and expiry; the old one works for the overlap, then expires.
pub async fn rotate(
    core: &Core,
    principal: &Principal,
    tenant_id: &str,
    key_id: &str,
    input: Rotate,
    ctx: &RequestContext,
    now: i64,
) -> Result<CreatedKey> {
    let caller = require(core, principal, tenant_id, TenantPermission::ApiKeysManage).await?;
    let overlap = input.overlap_seconds.unwrap_or(24 * 3600);
    if !(0..=30 * 24 * 3600).contains(&overlap) {
        return Err(Error::invalid(
            "overlap_seconds",
            "must be between 0 and 2592000 (30 days)",
        ));
    }
    let old = store::find(core.store.pool(), tenant_id, key_id)
        .await?
        .filter(|k| k.is_live(now) && k.rotated_to.is_none())
        .ok_or(Error::NotFound)?;
    // Rotating never widens a key beyond what the caller holds now.
    if !split(&old.permissions).iter().all(|p| caller.has(p)) {
        return Err(Error::Forbidden {
            code: crate::error::Code::Forbidden,
            message: "a key's permissions must be a subset of your own",
        });
    }
    let spec = KeySpec {
        name: &old.name,
        permissions: &old.permissions,
        allowed_cidrs: old.allowed_cidrs.as_deref(),
        expires_at: old.expires_at,
    };
    let mut tx = core.store.begin().await?;
    let created = insert_in(&mut tx, principal, tenant_id, &spec, Some(key_id), ctx, now).await?;
    if !store::mark_rotated(&mut *tx, key_id, &created.view.id, now + overlap).await? {
        return Err(Error::NotFound);
    }
    tx.commit().await?;
    core.tenants.key_changed(&old.secret_hash).await;
    Ok(created)
}

// ---------------------------------------------------------------- authentication

/// A key's row through the cache (dropped on every replica when the key changes).
async fn find_cached(core: &Core, hash: &str) -> Result<Option<Arc<ApiKeyRow>>> {
    if let Some(hit) = core.tenants.keys.get(hash) {
        return Ok(hit);
    }
    let row = store::find_by_hash(core.store.pool(), hash)
        .await?
        .map(Arc::new);
    core.tenants.keys.insert(hash, row.clone());
    Ok(row)
}

/// The principal of `Authorization: Bearer tsk_…`: a live key of a live tenant, used from an
/// address the tenant and the key allow, within the tenant's plan rate. A key with a bad
/// checksum is refused before any look-up.
pub async fn authenticate(
    core: &Core,
    token: &str,
    ip: Option<&str>,
    now: i64,
) -> Result<ApiKeyPrincipal> {
    let row = live_key(core, token, now)
        .await?
        .ok_or_else(Error::invalid_token)?;
    let tenant = info(core, &row.tenant_id)
        .await?
        .ok_or_else(Error::invalid_token)?;
    if tenant.status != TenantStatus::Active {
        return Err(Error::invalid_token());
    }
    if !tenant.admits(ip) || !key_admits(&row, ip) {
        return Err(policy::ip_not_allowed());
    }
    let rpm = tenant.limits().api_key_requests_per_minute;
    let limit = crate::abuse::Limit::new(
        u32::try_from(rpm).unwrap_or(u32::MAX),
        u32::try_from(rpm).unwrap_or(u32::MAX),
    );
    core.limiter
        .check_with(
            crate::abuse::Class::ApiKeyTenant,
            &row.tenant_id,
            Some(limit),
            now,
        )
        .await?;
    touch(core, &row, ip, now);
    Ok(ApiKeyPrincipal {
        key_id: row.id.clone(),
        tenant_id: row.tenant_id.clone(),
        permissions: split(&row.permissions),
    })
}

/// The live key for `token` (shape, checksum, revocation, expiry), or `None`.
pub async fn live_key(core: &Core, token: &str, now: i64) -> Result<Option<Arc<ApiKeyRow>>> {
    if !checked_token_ok(PREFIX, token) {
        return Ok(None);
    }
    Ok(find_cached(core, &token_hash(token))
        .await?
        .filter(|k| k.is_live(now)))
}

fn key_admits(row: &ApiKeyRow, ip: Option<&str>) -> bool {
    match &row.allowed_cidrs {
        None => true,
        Some(list) => {
            let nets: Vec<ipnet::IpNet> = list
                .split_whitespace()
                .filter_map(|s| s.parse().ok())
                .collect();
            // An unreadable list admits nobody (fail closed).
            !nets.is_empty() && policy::admits(&nets, ip)
        }
    }
}

/// Records the last use, at most once a minute per key and address, off the request path.
fn touch(core: &Core, row: &ApiKeyRow, ip: Option<&str>, now: i64) {
    let mark = format!("{}|{}", row.id, ip.unwrap_or(""));
    if core.tenants.touched.contains_key(&mark) {
        return;
    }
    core.tenants.touched.insert(mark, ());
    let store = core.store.clone();
    let id = row.id.clone();
    let ip = ip.map(str::to_string);
    tokio::spawn(async move {
        if let Err(e) = store::touch(store.writer(), &id, now, ip.as_deref()).await {
            tracing::warn!(error = %e, "recording an API key's last use failed");
        }
    });
}

/// What introspection (RFC 7662) says of a live key: its tenant, permissions and the tenant's
/// features.
pub async fn introspect(
    core: &Core,
    token: &str,
    now: i64,
) -> Result<Option<(Arc<ApiKeyRow>, Vec<String>)>> {
    let Some(row) = live_key(core, token, now).await? else {
        return Ok(None);
    };
    match info(core, &row.tenant_id).await? {
        Some(t) if t.status == TenantStatus::Active => {
            let features = t.features();
            Ok(Some((row, features)))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries() {
        let now = 1_000_000;
        assert!(parse_expiry(&serde_json::json!(now + 1), now).is_ok());
        assert!(parse_expiry(&serde_json::json!(now), now).is_err());
        assert!(parse_expiry(&serde_json::json!("2999-01-01T00:00:00Z"), now).is_err());
        assert!(parse_expiry(&serde_json::json!("1970-01-20T00:00:00Z"), now).is_ok());
        assert!(parse_expiry(&serde_json::json!(true), now).is_err());
        assert!(parse_expiry(&serde_json::json!("tomorrow"), now).is_err());
    }
}
