//! Tessera as an OpenID AuthZEN 1.0 policy decision point: may this user do this action in this
//! tenant? The answer comes from the same place every tenant route asks, the live membership
//! and its roles ([`crate::tenants::access`]), so a product built on Tessera authorizes its own
//! actions (application permissions such as `invoices:approve`) exactly as Tessera does.
//!
//! - Access Evaluation API (AuthZEN 1.0 §6): `POST /access/v1/evaluation`.
//! - Access Evaluations API (§7): `POST /access/v1/evaluations`, with request-level defaults and
//!   the three `evaluations_semantic` options (§7.1.2).
//! - PDP metadata (§9): `/.well-known/authzen-configuration`.
//!
//! The mapping (documented in `docs/authzen.md`):
//! - `subject`: `{"type": "user", "id": <user id or email address>}`.
//! - `action.name`: a permission of the tenant (built-in such as `members:read`, or an
//!   application permission).
//! - `resource`: `{"type": "tenant", "id": <tenant id or slug>}`, or any other type whose
//!   `properties.tenant` names the tenant (default: the caller's own tenant, a token's `tid` or
//!   an API key's tenant).
//!
//! Who may ask: a user about themselves (their own login, or a first-party client with
//! `tessera:account`); about others, a member holding `access:evaluate` in the tenant asked
//! about (through a token for that tenant), an API key of that tenant holding it, or an OAuth
//! client registered with the introspection permission (a resource server that may already see
//! every token's tenant and roles). In a batch, an evaluation the caller may not ask is denied
//! with the error in its `context` (§7.2); the single form answers it with the error itself.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::authz::{self, Permission, Principal, TenantPermission};
use crate::core::Core;
use crate::error::{Code, Error, Result};
use crate::tenants;

/// At most this many evaluations in one batch (a larger one is 422).
pub const MAX_EVALUATIONS: usize = 100;
/// At most this many bytes in an identifier or action name.
const MAX_ID: usize = 320;

/// A subject or resource (AuthZEN §5.1, §5.2).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct Entity {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    #[serde(default)]
    pub properties: Option<Map<String, Value>>,
}

/// An action (AuthZEN §5.3).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct Action {
    pub name: String,
    #[serde(default)]
    pub properties: Option<Map<String, Value>>,
}

/// `POST /access/v1/evaluation` (AuthZEN §6.1).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct Evaluation {
    pub subject: Entity,
    pub action: Action,
    pub resource: Entity,
    #[serde(default)]
    pub context: Option<Map<String, Value>>,
}

/// One entry of a batch: whatever it leaves out comes from the request's top level (§7.1).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct EvaluationItem {
    #[serde(default)]
    pub subject: Option<Entity>,
    #[serde(default)]
    pub action: Option<Action>,
    #[serde(default)]
    pub resource: Option<Entity>,
    #[serde(default)]
    pub context: Option<Map<String, Value>>,
}

/// `POST /access/v1/evaluations` (AuthZEN §7.1).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct Evaluations {
    #[serde(flatten)]
    pub defaults: EvaluationItem,
    #[serde(default)]
    pub evaluations: Option<Vec<EvaluationItem>>,
    #[serde(default)]
    pub options: Option<Options>,
}

/// Batch options (§7.1.2).
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
pub struct Options {
    #[serde(default)]
    pub evaluations_semantic: Semantic,
}

/// How a batch is run (§7.1.2.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Semantic {
    /// Every evaluation, in order.
    #[default]
    ExecuteAll,
    /// Stop after the first denial (it is the last decision returned).
    DenyOnFirstDeny,
    /// Stop after the first permit (it is the last decision returned).
    PermitOnFirstPermit,
}

crate::error::wire_codes! {
/// Why a decision came out as it did (`context.reason`).
pub enum Reason {
    /// The subject's roles in the tenant give the permission.
    Granted => "granted",
    /// The subject is a member, but no role of theirs gives the permission.
    PermissionMissing => "permission_missing",
    /// Unknown user, unknown or deleted tenant, or not a member: one answer for all three.
    NotAMember => "not_a_member",
    /// The tenant is suspended: nobody may do anything in it.
    TenantSuspended => "tenant_suspended",
    /// The caller may not ask this question (batch only; `context.error` says why).
    NotAllowedToAsk => "not_allowed_to_ask",
}
}

/// An access evaluation response (§6.2).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Decision {
    pub decision: bool,
    pub context: DecisionContext,
}

/// What Tessera adds to a decision: the reason, the tenant's features (plan entitlements, so a
/// product can gate features per tenant in the same call), and with `context.explain: true`
/// the roles and permissions that decided it.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct DecisionContext {
    pub reason: Option<Reason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
    /// Explain: every role of the subject in the tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// Explain: the roles among them that give the permission.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub granted_by: Option<Vec<String>>,
    /// Explain: every permission those roles give.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<String>>,
    /// Batch only: why the caller may not ask this one (§7.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<DecisionError>,
}

/// An evaluation the caller may not ask, inside a batch.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct DecisionError {
    pub status: u16,
    pub code: Code,
    pub message: &'static str,
}

/// `POST /access/v1/evaluations`: with no `evaluations` it is the single form (§7.1: "the
/// request behaves like an Access Evaluation request").
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum BatchAnswer {
    Many { evaluations: Vec<Decision> },
    One(Decision),
}

/// `POST /access/v1/evaluation`.
pub async fn evaluate(core: &Core, principal: &Principal, input: Evaluation) -> Result<Decision> {
    authz::require(principal, Permission::EvaluateAccess)?;
    validate(&input, "")?;
    decide(core, principal, &input).await
}

/// `POST /access/v1/evaluations`.
pub async fn evaluate_many(
    core: &Core,
    principal: &Principal,
    input: Evaluations,
) -> Result<BatchAnswer> {
    authz::require(principal, Permission::EvaluateAccess)?;
    let items = input.evaluations.unwrap_or_default();
    if items.is_empty() {
        let one = complete(&input.defaults, &EvaluationItem::default(), "")?;
        validate(&one, "")?;
        return Ok(BatchAnswer::One(decide(core, principal, &one).await?));
    }
    if items.len() > MAX_EVALUATIONS {
        return Err(Error::invalid(
            "evaluations",
            "at most 100 evaluations in one request",
        ));
    }
    // The whole request is checked before any decision, so a malformed entry decides nothing.
    let mut all = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let prefix = format!("evaluations[{i}].");
        let one = complete(&input.defaults, item, &prefix)?;
        validate(&one, &prefix)?;
        all.push(one);
    }
    let semantic = input.options.unwrap_or_default().evaluations_semantic;
    let mut out = Vec::with_capacity(all.len());
    for one in &all {
        let decision = match decide(core, principal, one).await {
            Ok(d) => d,
            Err(e) => refused(e)?,
        };
        let stop = match semantic {
            Semantic::ExecuteAll => false,
            Semantic::DenyOnFirstDeny => !decision.decision,
            Semantic::PermitOnFirstPermit => decision.decision,
        };
        out.push(decision);
        if stop {
            break;
        }
    }
    Ok(BatchAnswer::Many { evaluations: out })
}

/// An evaluation the caller may not ask, as a denial in a batch; any other error stays one.
fn refused(e: Error) -> Result<Decision> {
    let (status, code, message) = match e {
        Error::Forbidden { code, message } => (403, code, message),
        Error::NotFound => (404, Code::NotFound, "no such tenant"),
        other => return Err(other),
    };
    Ok(Decision {
        decision: false,
        context: DecisionContext {
            reason: Some(Reason::NotAllowedToAsk),
            error: Some(DecisionError {
                status,
                code,
                message,
            }),
            ..DecisionContext::default()
        },
    })
}

/// A batch entry with the defaults filled in; 422 naming what is missing.
fn complete(defaults: &EvaluationItem, item: &EvaluationItem, prefix: &str) -> Result<Evaluation> {
    fn pick<T: Clone>(own: &Option<T>, default: &Option<T>, field: &str) -> Result<T> {
        own.as_ref()
            .or(default.as_ref())
            .cloned()
            .ok_or_else(|| Error::invalid(field, "required (here or at the top level)"))
    }
    Ok(Evaluation {
        subject: pick(
            &item.subject,
            &defaults.subject,
            &format!("{prefix}subject"),
        )?,
        action: pick(&item.action, &defaults.action, &format!("{prefix}action"))?,
        resource: pick(
            &item.resource,
            &defaults.resource,
            &format!("{prefix}resource"),
        )?,
        context: item.context.clone().or_else(|| defaults.context.clone()),
    })
}

fn validate(e: &Evaluation, prefix: &str) -> Result<()> {
    let field = |name: &str| format!("{prefix}{name}");
    if e.subject.kind != "user" {
        return Err(Error::invalid(&field("subject.type"), "must be \"user\""));
    }
    for (name, value) in [
        ("subject.id", &e.subject.id),
        ("action.name", &e.action.name),
        ("resource.type", &e.resource.kind),
        ("resource.id", &e.resource.id),
    ] {
        if value.is_empty() || value.len() > MAX_ID || value.contains('\0') {
            return Err(Error::invalid(
                &field(name),
                "must be 1 to 320 bytes, without NUL",
            ));
        }
    }
    if e.resource.kind != "tenant"
        && let Some(t) = resource_tenant_property(&e.resource)
        && !t.is_string()
    {
        return Err(Error::invalid(
            &field("resource.properties.tenant"),
            "must be a tenant id or slug",
        ));
    }
    if let Some(explain) = e.context.as_ref().and_then(|c| c.get("explain"))
        && !explain.is_boolean()
    {
        return Err(Error::invalid(
            &field("context.explain"),
            "must be a boolean",
        ));
    }
    Ok(())
}

fn resource_tenant_property(resource: &Entity) -> Option<&Value> {
    resource.properties.as_ref().and_then(|p| p.get("tenant"))
}

/// The tenant id a resource names: `tenant` resources by id or slug, others through
/// `properties.tenant`, else the caller's own tenant. `None`: no such tenant.
async fn tenant_of(
    core: &Core,
    principal: &Principal,
    resource: &Entity,
) -> Result<Option<String>> {
    let named = if resource.kind == "tenant" {
        Some(resource.id.as_str())
    } else {
        resource_tenant_property(resource).and_then(Value::as_str)
    };
    let Some(key) = named else {
        return match principal.tenant_id() {
            Some(t) => Ok(Some(t.to_string())),
            None => Err(Error::invalid(
                "resource.properties.tenant",
                "name the tenant: this credential has none of its own",
            )),
        };
    };
    if tenants::info(core, key).await?.is_some() {
        return Ok(Some(key.to_string()));
    }
    Ok(
        crate::store::tenants::find_by_id_or_slug(core.store.pool(), key)
            .await?
            .map(|row| row.id),
    )
}

/// The user a subject names: a user id, or an email address.
async fn user_of(core: &Core, subject: &Entity) -> Result<Option<String>> {
    if !subject.id.contains('@') {
        return Ok(Some(subject.id.clone()));
    }
    let email = crate::store::users::normalize_email(&subject.id);
    Ok(
        crate::store::users::find_by_email(core.store.pool(), &email)
            .await?
            .map(|u| u.id),
    )
}

/// Whether the caller may ask about `user_id` in `tenant_id`: 403 (or 404 for an unknown
/// tenant) when not.
async fn may_ask(
    core: &Core,
    principal: &Principal,
    user_id: Option<&str>,
    tenant_id: Option<&str>,
) -> Result<()> {
    if let (Principal::User(me), Some(user)) = (principal, user_id)
        && me.user_id == user
    {
        return Ok(());
    }
    match principal {
        Principal::Client(c) if c.may_evaluate => Ok(()),
        Principal::System => Ok(()),
        Principal::User(_) | Principal::ApiKey(_) => {
            let tenant = tenant_id.ok_or(Error::NotFound)?;
            tenants::require(core, principal, tenant, TenantPermission::AccessEvaluate)
                .await
                .map(|_| ())
        }
        Principal::Client(_) => Err(Error::Forbidden {
            code: Code::InsufficientScope,
            message: "this client may not evaluate access (it needs the introspection permission)",
        }),
    }
}

async fn decide(core: &Core, principal: &Principal, e: &Evaluation) -> Result<Decision> {
    let tenant_id = tenant_of(core, principal, &e.resource).await?;
    let user_id = user_of(core, &e.subject).await?;
    may_ask(core, principal, user_id.as_deref(), tenant_id.as_deref()).await?;
    let explain = e
        .context
        .as_ref()
        .and_then(|c| c.get("explain"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let deny = |reason| Decision {
        decision: false,
        context: DecisionContext {
            reason: Some(reason),
            ..DecisionContext::default()
        },
    };
    let (Some(tenant_id), Some(user_id)) = (tenant_id, user_id) else {
        return Ok(deny(Reason::NotAMember));
    };
    let Some(tenant) = tenants::info(core, &tenant_id).await? else {
        return Ok(deny(Reason::NotAMember));
    };
    let access = match tenants::access(core, &tenant_id, &user_id).await {
        Ok(Some(a)) => a,
        Ok(None) => return Ok(deny(Reason::NotAMember)),
        Err(Error::Forbidden {
            code: Code::TenantSuspended,
            ..
        }) => return Ok(deny(Reason::TenantSuspended)),
        Err(e) => return Err(e),
    };
    let granted = access.has(&e.action.name);
    let mut context = DecisionContext {
        reason: Some(if granted {
            Reason::Granted
        } else {
            Reason::PermissionMissing
        }),
        tenant_id: Some(tenant_id),
        features: Some(tenant.features()),
        ..DecisionContext::default()
    };
    if explain {
        context.granted_by = Some(
            access
                .roles
                .iter()
                .filter(|r| {
                    tenants::permissions_of(&tenant, std::slice::from_ref(*r))
                        .contains(&e.action.name)
                })
                .cloned()
                .collect(),
        );
        context.permissions = Some(access.permissions.iter().cloned().collect());
        context.roles = Some(access.roles);
    }
    Ok(Decision {
        decision: granted,
        context,
    })
}

/// `/.well-known/authzen-configuration` (AuthZEN §9.1): the PDP's endpoints.
pub fn metadata(issuer: &str) -> Value {
    serde_json::json!({
        "policy_decision_point": issuer,
        "access_evaluation_endpoint": format!("{issuer}/access/v1/evaluation"),
        "access_evaluations_endpoint": format!("{issuer}/access/v1/evaluations"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(subject: Option<&str>, action: Option<&str>) -> EvaluationItem {
        EvaluationItem {
            subject: subject.map(|id| Entity {
                kind: "user".into(),
                id: id.into(),
                properties: None,
            }),
            action: action.map(|name| Action {
                name: name.into(),
                properties: None,
            }),
            resource: None,
            context: None,
        }
    }

    #[test]
    fn batch_entries_take_the_defaults_they_leave_out() {
        let mut defaults = item(Some("u1"), Some("members:read"));
        defaults.resource = Some(Entity {
            kind: "tenant".into(),
            id: "t".into(),
            properties: None,
        });
        let one = complete(&defaults, &item(None, Some("roles:manage")), "").unwrap();
        assert_eq!(one.subject.id, "u1");
        assert_eq!(one.action.name, "roles:manage");
        assert_eq!(one.resource.id, "t");
        let missing = complete(&item(None, None), &item(Some("u"), None), "evaluations[3].");
        let Err(Error::Validation(fields)) = missing else {
            panic!("{missing:?}");
        };
        assert_eq!(fields[0].field, "evaluations[3].action");
    }

    #[test]
    fn malformed_entities_are_refused_by_name() {
        let mut e = complete(
            &EvaluationItem {
                resource: Some(Entity {
                    kind: "invoice".into(),
                    id: "42".into(),
                    properties: Some(
                        serde_json::from_str(r#"{"tenant": 7}"#).expect("a JSON object"),
                    ),
                }),
                ..item(Some("u"), Some("invoices:approve"))
            },
            &EvaluationItem::default(),
            "",
        )
        .unwrap();
        let Err(Error::Validation(fields)) = validate(&e, "") else {
            panic!("accepted a numeric tenant");
        };
        assert_eq!(fields[0].field, "resource.properties.tenant");
        e.resource.properties = None;
        e.subject.kind = "group".into();
        let Err(Error::Validation(fields)) = validate(&e, "") else {
            panic!("accepted a group subject");
        };
        assert_eq!(fields[0].field, "subject.type");
        e.subject.kind = "user".into();
        e.action.name = "x".repeat(321);
        assert!(validate(&e, "").is_err());
    }
}
