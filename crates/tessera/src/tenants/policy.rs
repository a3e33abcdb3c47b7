//! What a tenant allows: its IP allow-list, its plan's limits and features (per tenant type,
//! overridable per tenant by a system administrator), and the usage counted against them.
//!
//! Both live in the tenant's `settings` JSON, read through the tenant cache, so checking them
//! costs no query on the hot path.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{TenantInfo, TenantType, info, require};
use crate::audit::{self, Entry, action};
use crate::authz::{self, Permission, Principal, TenantPermission};
use crate::context::RequestContext;
use crate::core::Core;
use crate::error::{Code, Error, Result};
use crate::store::tenants as store;

/// The `settings` column of a tenant.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TenantSettings {
    /// CIDRs sign-ins, tokens and API keys of the tenant may come from (enterprise tenants;
    /// empty: anywhere).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_cidrs: Vec<IpNet>,
    /// A system administrator's overrides of the plan's limits.
    #[serde(default, skip_serializing_if = "LimitOverrides::is_empty")]
    pub limits: LimitOverrides,
    /// A system administrator's replacement of the plan's features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
    /// Members get tokens for the tenant only from a sign-in with a second factor.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mfa_required: bool,
}

impl TenantSettings {
    /// The stored JSON; anything unreadable counts as an allow-list that admits nobody, so a
    /// damaged row fails closed.
    pub fn parse(json: &str) -> Self {
        serde_json::from_str(json).unwrap_or_else(|e| {
            tracing::error!(error = %e, "unreadable tenant settings: refusing every address");
            Self {
                allowed_cidrs: vec!["255.255.255.255/32".parse().expect("a valid net")],
                ..Self::default()
            }
        })
    }

    fn to_json(&self) -> String {
        serde_json::to_string(self).expect("settings serialise")
    }
}

/// The limits of a plan.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Limits {
    pub max_members: i64,
    pub max_api_keys: i64,
    pub max_custom_roles: i64,
    /// Requests per minute authenticated by the tenant's API keys (all keys together).
    pub api_key_requests_per_minute: i64,
}

/// Per-tenant overrides of [`Limits`]; absent members keep the plan's value.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_members: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_api_keys: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_custom_roles: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_requests_per_minute: Option<i64>,
}

impl LimitOverrides {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The plan of each tenant type (documented in `docs/tenants.md`).
pub fn plan(kind: TenantType) -> (Limits, &'static [&'static str]) {
    match kind {
        TenantType::Personal => (
            Limits {
                max_members: 1,
                max_api_keys: 5,
                max_custom_roles: 5,
                api_key_requests_per_minute: 600,
            },
            &[],
        ),
        TenantType::Team => (
            Limits {
                max_members: 100,
                max_api_keys: 25,
                max_custom_roles: 25,
                api_key_requests_per_minute: 3_000,
            },
            &["audit_export"],
        ),
        TenantType::Enterprise => (
            Limits {
                max_members: 100_000,
                max_api_keys: 1_000,
                max_custom_roles: 200,
                api_key_requests_per_minute: 60_000,
            },
            &["audit_export", "ip_allowlist", "sso"],
        ),
    }
}

impl TenantInfo {
    /// The plan's limits with this tenant's overrides.
    pub fn limits(&self) -> Limits {
        let (base, _) = plan(self.kind);
        let o = &self.settings.limits;
        Limits {
            max_members: o.max_members.unwrap_or(base.max_members),
            max_api_keys: o.max_api_keys.unwrap_or(base.max_api_keys),
            max_custom_roles: o.max_custom_roles.unwrap_or(base.max_custom_roles),
            api_key_requests_per_minute: o
                .api_key_requests_per_minute
                .unwrap_or(base.api_key_requests_per_minute),
        }
    }

    /// The tenant's features: the plan's, or the administrator's replacement.
    pub fn features(&self) -> Vec<String> {
        match &self.settings.features {
            Some(f) => f.clone(),
            None => plan(self.kind).1.iter().map(|f| f.to_string()).collect(),
        }
    }

    /// Whether `ip` may act in this tenant (an empty allow-list admits every address; an
    /// unknown address is refused once there is a list).
    pub fn admits(&self, ip: Option<&str>) -> bool {
        admits(&self.settings.allowed_cidrs, ip)
    }
}

/// Whether `ip` falls in one of `nets` (none: every address). IPv4-mapped IPv6 addresses are
/// compared as IPv4.
pub fn admits(nets: &[IpNet], ip: Option<&str>) -> bool {
    if nets.is_empty() {
        return true;
    }
    let Some(ip) = ip.and_then(|s| s.parse::<IpAddr>().ok()) else {
        return false;
    };
    let ip = ip.to_canonical();
    nets.iter().any(|n| n.contains(&ip))
}

pub fn ip_not_allowed() -> Error {
    Error::Forbidden {
        code: Code::IpNotAllowed,
        message: "this tenant does not allow access from your address",
    }
}

/// 403 `ip_not_allowed` unless `ip` may act in `tenant_id`.
/// Whether the tenant takes a sign-in (`amr`, see [`admits_sign_in`]) from `ip`: its allow-list
/// and its MFA policy, on one read of the cached tenant.
pub async fn check_entry(
    core: &Core,
    tenant_id: &str,
    ip: Option<&str>,
    amr: Option<&str>,
) -> Result<()> {
    match info(core, tenant_id).await? {
        Some(t) if !t.admits(ip) => Err(ip_not_allowed()),
        Some(t) if !admits_sign_in(&t, amr) => Err(mfa_required()),
        _ => Ok(()),
    }
}

pub fn limit_reached(message: &'static str) -> Error {
    Error::Conflict {
        code: Code::LimitReached,
        message,
    }
}

/// Parses a list of CIDRs (`10.0.0.0/8`, `2001:db8::/32`, or a bare address for one host),
/// naming the bad entry in a 422.
pub fn parse_cidrs(field: &str, list: &[String]) -> Result<Vec<IpNet>> {
    if list.len() > 100 {
        return Err(Error::invalid(field, "at most 100 entries"));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, s) in list.iter().enumerate() {
        let net = s
            .trim()
            .parse::<IpNet>()
            .or_else(|_| s.trim().parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| {
                Error::invalid(
                    field,
                    format!("entry {i} is not a CIDR such as 203.0.113.0/24 or 2001:db8::/32"),
                )
            })?;
        // A mapped IPv4 net is stored as IPv4 (the addresses it is compared with are too).
        let net = match net {
            IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
                Some(v4) if v6.prefix_len() >= 96 => {
                    IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).expect("a valid prefix")
                }
                _ => net.trunc(),
            },
            IpNet::V4(_) => net.trunc(),
        };
        if !out.contains(&net) {
            out.push(net);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- endpoints

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAllowList {
    pub allowed_cidrs: Vec<String>,
}

/// The allow-list as shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AllowListView {
    pub allowed_cidrs: Vec<String>,
}

/// `GET /tenants/{id}/ip-allowlist` (`tenant:read`).
pub async fn allow_list(
    core: &Core,
    principal: &Principal,
    tenant_id: &str,
) -> Result<AllowListView> {
    require(core, principal, tenant_id, TenantPermission::TenantRead).await?;
    let tenant = info(core, tenant_id).await?.ok_or(Error::NotFound)?;
    Ok(AllowListView {
        allowed_cidrs: tenant
            .settings
            .allowed_cidrs
            .iter()
            .map(ToString::to_string)
            .collect(),
    })
}

/// Whether a sign-in with these RFC 8176 methods may get tokens for the tenant: with
/// `mfa_required`, only one that used more than one factor. `None`: no person signed in (an API
/// key acting for the tenant), which the policy does not concern.
pub fn admits_sign_in(tenant: &TenantInfo, amr: Option<&str>) -> bool {
    use crate::mfa::acr::Acr;
    !tenant.settings.mfa_required || amr.is_none_or(|a| Acr::of_amr(a).satisfies(Acr::Mfa))
}

/// 403 `tenant_requires_mfa`.
pub fn mfa_required() -> Error {
    Error::Forbidden {
        code: Code::TenantRequiresMfa,
        message: "this tenant requires a second factor: add an authenticator app or a passkey, \
                  then sign in with it",
    }
}

/// `{required}`: the tenant's MFA policy.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaPolicy {
    /// Members get tokens for the tenant only from a sign-in with a second factor; a member
    /// without one is refused (`tenant_requires_mfa`) until they add one.
    pub required: bool,
}

/// `GET /tenants/{id}/mfa-policy` (`tenant:read`).
pub async fn mfa_policy(core: &Core, principal: &Principal, tenant_id: &str) -> Result<MfaPolicy> {
    require(core, principal, tenant_id, TenantPermission::TenantRead).await?;
    let tenant = info(core, tenant_id).await?.ok_or(Error::NotFound)?;
    Ok(MfaPolicy {
        required: tenant.settings.mfa_required,
    })
}

/// `PUT /tenants/{id}/mfa-policy` `{required}` (`tenant:manage`). Turning it on from a sign-in
/// without a second factor is refused: the caller would shut themselves out.
pub async fn set_mfa_policy(
    core: &Core,
    principal: &Principal,
    tenant_id: &str,
    input: MfaPolicy,
    ctx: &RequestContext,
    now: i64,
) -> Result<MfaPolicy> {
    require(core, principal, tenant_id, TenantPermission::TenantManage).await?;
    let tenant = info(core, tenant_id).await?.ok_or(Error::NotFound)?;
    if input.required
        && let Principal::User(user) = principal
    {
        let signed_in =
            crate::store::sessions::authentication_of(core.store.pool(), &user.session_id).await?;
        let amr = signed_in.and_then(|(_, amr)| amr).unwrap_or_default();
        let strong = crate::mfa::acr::Acr::of_amr(&amr).satisfies(crate::mfa::acr::Acr::Mfa);
        if !strong {
            return Err(Error::StepUp(crate::mfa::step_up::Needed {
                acr: crate::mfa::acr::Acr::Mfa,
                max_age: None,
            }));
        }
    }
    let mut settings = tenant.settings.clone();
    settings.mfa_required = input.required;
    save(
        core,
        principal,
        tenant_id,
        &settings,
        "mfa_policy",
        ctx,
        now,
    )
    .await?;
    mfa_policy(core, principal, tenant_id).await
}

/// `PUT /tenants/{id}/ip-allowlist` `{allowed_cidrs}` (`tenant:manage`, enterprise tenants):
/// an empty list admits every address. A list that would shut out the caller's own address is
/// refused, so an administrator cannot lock themselves out by a typo.
pub async fn set_allow_list(
    core: &Core,
    principal: &Principal,
    tenant_id: &str,
    input: SetAllowList,
    ctx: &RequestContext,
    now: i64,
) -> Result<AllowListView> {
    require(core, principal, tenant_id, TenantPermission::TenantManage).await?;
    let tenant = info(core, tenant_id).await?.ok_or(Error::NotFound)?;
    if tenant.kind != TenantType::Enterprise
        && !tenant.features().iter().any(|f| f == "ip_allowlist")
    {
        return Err(Error::Forbidden {
            code: Code::Forbidden,
            message: "IP allow-lists are a feature of enterprise tenants",
        });
    }
    let nets = parse_cidrs("allowed_cidrs", &input.allowed_cidrs)?;
    if !admits(&nets, ctx.ip.as_deref()) {
        return Err(Error::invalid(
            "allowed_cidrs",
            "the list does not include the address you are calling from",
        ));
    }
    let mut settings = tenant.settings.clone();
    settings.allowed_cidrs = nets;
    save(
        core,
        principal,
        tenant_id,
        &settings,
        "ip_allowlist",
        ctx,
        now,
    )
    .await?;
    allow_list(core, principal, tenant_id).await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPlan {
    /// Overrides of the plan's limits (`null` members go back to the plan's value).
    #[serde(default)]
    pub limits: Option<LimitOverrides>,
    /// The tenant's features, replacing the plan's; `null` goes back to the plan's.
    #[serde(default, deserialize_with = "present")]
    pub features: Option<Option<Vec<String>>>,
}

/// Distinguishes an absent member from `null`.
fn present<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// The plan of a tenant as shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlanView {
    #[serde(rename = "type")]
    pub kind: TenantType,
    pub limits: Limits,
    pub features: Vec<String>,
    pub overrides: LimitOverrides,
}

fn plan_view(tenant: &TenantInfo) -> PlanView {
    PlanView {
        kind: tenant.kind,
        limits: tenant.limits(),
        features: tenant.features(),
        overrides: tenant.settings.limits,
    }
}

/// `PATCH /tenants/{id}/plan` (system administrators): overrides limits and features.
pub async fn set_plan(
    core: &Core,
    principal: &Principal,
    tenant_id: &str,
    input: SetPlan,
    ctx: &RequestContext,
    now: i64,
) -> Result<PlanView> {
    authz::require(principal, Permission::ManageTenants)?;
    let tenant = info(core, tenant_id).await?.ok_or(Error::NotFound)?;
    let mut settings = tenant.settings.clone();
    if let Some(limits) = input.limits {
        for (field, v) in [
            ("limits.max_members", limits.max_members),
            ("limits.max_api_keys", limits.max_api_keys),
            ("limits.max_custom_roles", limits.max_custom_roles),
            (
                "limits.api_key_requests_per_minute",
                limits.api_key_requests_per_minute,
            ),
        ] {
            if v.is_some_and(|v| !(0..=10_000_000).contains(&v)) {
                return Err(Error::invalid(field, "must be between 0 and 10000000"));
            }
        }
        settings.limits = limits;
    }
    if let Some(features) = input.features {
        if let Some(list) = &features {
            if list.len() > 100 {
                return Err(Error::invalid("features", "at most 100 features"));
            }
            for f in list {
                let ok = (1..=64).contains(&f.len())
                    && f.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                    });
                if !ok {
                    return Err(Error::invalid(
                        "features",
                        "each feature is 1 to 64 of a-z, 0-9, '_' and '-'",
                    ));
                }
            }
        }
        settings.features = features.map(|mut l| {
            l.sort();
            l.dedup();
            l
        });
    }
    save(core, principal, tenant_id, &settings, "plan", ctx, now).await?;
    let tenant = info(core, tenant_id).await?.ok_or(Error::NotFound)?;
    Ok(plan_view(&tenant))
}

/// `GET /tenants/{id}/plan` (`tenant:read`).
pub async fn get_plan(core: &Core, principal: &Principal, tenant_id: &str) -> Result<PlanView> {
    require(core, principal, tenant_id, TenantPermission::TenantRead).await?;
    let tenant = info(core, tenant_id).await?.ok_or(Error::NotFound)?;
    Ok(plan_view(&tenant))
}

async fn save(
    core: &Core,
    principal: &Principal,
    tenant_id: &str,
    settings: &TenantSettings,
    what: &'static str,
    ctx: &RequestContext,
    now: i64,
) -> Result<()> {
    let mut tx = core.store.begin().await?;
    store::set_settings(&mut *tx, tenant_id, &settings.to_json(), now).await?;
    let entry = Entry::success(principal.actor(), action::CHANGE_TENANT_POLICY)
        .target("tenant", tenant_id)
        .tenant(tenant_id)
        .reason(what);
    audit::record(&mut *tx, ctx, &entry, now).await?;
    tx.commit().await?;
    core.tenants.tenant_changed(tenant_id).await;
    Ok(())
}

/// A count against its limit.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Usage {
    pub used: i64,
    pub limit: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageView {
    pub members: Usage,
    pub api_keys: Usage,
    pub custom_roles: Usage,
    pub api_key_requests_per_minute: i64,
    pub features: Vec<String>,
}

/// `GET /tenants/{id}/usage` (`tenant:read`).
pub async fn usage(core: &Core, principal: &Principal, tenant_id: &str) -> Result<UsageView> {
    require(core, principal, tenant_id, TenantPermission::TenantRead).await?;
    let tenant = info(core, tenant_id).await?.ok_or(Error::NotFound)?;
    let limits = tenant.limits();
    let db = core.store.pool();
    let now = core.clock.now();
    Ok(UsageView {
        members: Usage {
            used: store::count_members(db, tenant_id).await?,
            limit: limits.max_members,
        },
        api_keys: Usage {
            used: crate::store::api_keys::count_active(db, tenant_id, now).await?,
            limit: limits.max_api_keys,
        },
        custom_roles: Usage {
            used: tenant.custom_roles.len() as i64,
            limit: limits.max_custom_roles,
        },
        api_key_requests_per_minute: limits.api_key_requests_per_minute,
        features: tenant.features(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        parse_cidrs("c", &list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn allow_lists_match_v4_v6_mapped_and_edges() {
        assert!(admits(&[], None));
        let list = nets(&["203.0.113.0/24", "2001:db8::/32", "198.51.100.7"]);
        assert!(admits(&list, Some("203.0.113.200")));
        assert!(!admits(&list, Some("203.0.114.1")));
        assert!(admits(&list, Some("::ffff:203.0.113.9")));
        assert!(admits(&list, Some("2001:db8:ffff::1")));
        assert!(!admits(&list, Some("2001:db9::1")));
        assert!(admits(&list, Some("198.51.100.7")));
        assert!(!admits(&list, Some("198.51.100.8")));
        assert!(!admits(&list, None));
        assert!(!admits(&list, Some("not an ip")));
        assert!(admits(&nets(&["0.0.0.0/0"]), Some("192.0.2.1")));
        assert!(!admits(&nets(&["0.0.0.0/0"]), Some("2001:db8::1")));
        assert!(admits(&nets(&["::/0"]), Some("2001:db8::1")));
        assert!(admits(&nets(&["2001:db8::1/128"]), Some("2001:db8::1")));
        assert!(admits(&nets(&["::ffff:10.0.0.0/104"]), Some("10.1.2.3")));
        // Host bits are dropped: 10.1.2.3/8 is 10.0.0.0/8.
        assert_eq!(nets(&["10.1.2.3/8"])[0].to_string(), "10.0.0.0/8");
    }

    #[test]
    fn malformed_cidrs_are_named() {
        for bad in [
            "10.0.0.0/33",
            "2001:db8::/129",
            "10.0.0",
            "",
            "x/8",
            "10.0.0.0/-1",
        ] {
            let err = parse_cidrs("allowed_cidrs", &[bad.to_string()]).unwrap_err();
            assert!(matches!(err, Error::Validation(_)), "{bad}");
        }
    }

    #[test]
    fn damaged_settings_admit_nobody() {
        let s = TenantSettings::parse("{not json");
        assert!(!admits(&s.allowed_cidrs, Some("192.0.2.1")));
        assert_eq!(TenantSettings::parse("{}"), TenantSettings::default());
    }
}
