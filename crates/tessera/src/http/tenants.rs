//! `/tenants/*` and `/invitations/accept`: tenants, members, invitations, roles and
//! permissions, API keys, allow-lists, plans and the tenant's audit log. Handlers extract,
//! call `crate::tenants` and respond; what a caller may do is decided there, through `authz`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa_axum::routes;

use super::Access;
use super::extract::{Caller, Context, Json};
use crate::app::AppState;
use crate::audit;
use crate::authz::Permission;
use crate::error::Result;
use crate::tenants::{
    self, CreateTenant, TenantView, UpdateTenant, api_keys, domains, invitations, members, policy,
    roles,
};

pub fn router() -> super::Routes {
    use Permission::{ActInTenant, ManageTenants, UseTenants};
    let member = Access::Permission(ActInTenant);
    let operator = Access::Permission(ManageTenants);
    super::Routes::default()
        .api(routes!(list, create), Access::Permission(UseTenants))
        .api(routes!(get_one, update, delete_tenant), member)
        .api(routes!(suspend), operator)
        .api(routes!(reactivate), operator)
        .api(routes!(list_members), member)
        .api(routes!(set_member_roles, remove_member), member)
        .api(routes!(list_invitations, invite), member)
        .api(routes!(revoke_invitation), member)
        .api(routes!(accept_invitation), Access::Permission(UseTenants))
        .api(routes!(list_roles), member)
        .api(routes!(put_role, delete_role), member)
        .api(routes!(list_permissions, add_permission), member)
        .api(routes!(list_keys, create_key), member)
        .api(routes!(revoke_key), member)
        .api(routes!(rotate_key), member)
        .api(routes!(get_allow_list, set_allow_list), member)
        .api(routes!(get_mfa_policy, set_mfa_policy), member)
        .api(routes!(get_plan), member)
        // Plan overrides are the operator's: the same path, its own guard.
        .api(routes!(set_plan), operator)
        .api(routes!(usage), member)
        .api(routes!(list_domains, claim_domain), member)
        .api(routes!(release_domain), member)
        .api(routes!(domain_sign_in), member)
        // Verifying a domain is the operator's check.
        .api(routes!(verify_domain), operator)
        .api(routes!(audit_log), member)
}

/// `{"tenants": […]}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct TenantList {
    tenants: Vec<TenantView>,
}

/// `{"members": […]}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct MemberList {
    members: Vec<members::MemberView>,
}

/// `{"invitations": […]}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct InvitationList {
    invitations: Vec<invitations::InvitationView>,
}

/// `{"roles": […]}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct RoleList {
    roles: Vec<roles::RoleView>,
}

/// `{"permissions": […]}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct PermissionList {
    permissions: Vec<roles::PermissionView>,
}

/// `{"api_keys": […]}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct ApiKeyList {
    api_keys: Vec<api_keys::ApiKeyView>,
}

/// Creates a team tenant owned by the caller.
#[utoipa::path(post, path = "/tenants", tag = "tenants", request_body = CreateTenant, responses((status = 201, description = "The new team tenant, the caller its owner", body = TenantView)))]
async fn create(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Json(input): Json<CreateTenant>,
) -> Result<Response> {
    let tenant = tenants::create(&state, &principal, input, &ctx, state.clock.now()).await?;
    Ok((StatusCode::CREATED, axum::Json(tenant)).into_response())
}

/// The tenants the caller is a member of.
#[utoipa::path(get, path = "/tenants", tag = "tenants", responses((status = 200, description = "The tenants", body = TenantList)))]
async fn list(State(state): State<AppState>, Caller(principal): Caller) -> Result<Response> {
    let mine = tenants::list_mine(&state, &principal).await?;
    Ok(axum::Json(TenantList { tenants: mine }).into_response())
}

/// One tenant.
#[utoipa::path(get, path = "/tenants/{id}", tag = "tenants", params(("id" = String, Path, description = "The tenant's id")), responses((status = 200, description = "The tenant", body = TenantView)))]
async fn get_one(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(axum::Json(tenants::get(&state, &principal, &id).await?).into_response())
}

/// Renames a tenant or changes its settings.
#[utoipa::path(patch, path = "/tenants/{id}", tag = "tenants", params(("id" = String, Path, description = "The tenant's id")), request_body = UpdateTenant, responses((status = 200, description = "The tenant as changed", body = TenantView)))]
async fn update(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(id): Path<String>,
    Json(input): Json<UpdateTenant>,
) -> Result<Response> {
    let now = state.clock.now();
    let tenant = tenants::update(&state, &principal, &id, input, &ctx, now).await?;
    Ok(axum::Json(tenant).into_response())
}

/// Deletes a tenant (soft: purged later by `tessera tenants purge`).
#[utoipa::path(delete, path = "/tenants/{id}", tag = "tenants", params(("id" = String, Path, description = "The tenant's id")), responses((status = 204, description = "Deleted")))]
async fn delete_tenant(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(id): Path<String>,
) -> Result<Response> {
    tenants::delete(&state, &principal, &id, &ctx, state.clock.now()).await?;
    Ok(super::no_content())
}

/// Suspends a tenant: its members and API keys are refused inside it.
#[utoipa::path(post, path = "/tenants/{id}/suspend", tag = "tenants", params(("id" = String, Path, description = "The tenant's id")), responses((status = 200, description = "The tenant as suspended", body = TenantView)))]
async fn suspend(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(id): Path<String>,
) -> Result<Response> {
    let now = state.clock.now();
    let tenant = tenants::set_suspended(&state, &principal, &id, true, &ctx, now).await?;
    Ok(axum::Json(tenant).into_response())
}

/// Reactivates a suspended tenant.
#[utoipa::path(post, path = "/tenants/{id}/reactivate", tag = "tenants", params(("id" = String, Path, description = "The tenant's id")), responses((status = 200, description = "The tenant as reactivated", body = TenantView)))]
async fn reactivate(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(id): Path<String>,
) -> Result<Response> {
    let now = state.clock.now();
    let tenant = tenants::set_suspended(&state, &principal, &id, false, &ctx, now).await?;
    Ok(axum::Json(tenant).into_response())
}

/// The tenant's members and their roles.
#[utoipa::path(get, path = "/tenants/{id}/members", tag = "tenants", params(("id" = String, Path, description = "The tenant's id")), responses((status = 200, description = "The members", body = MemberList)))]
async fn list_members(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    let list = members::list(&state, &principal, &id).await?;
    Ok(axum::Json(MemberList { members: list }).into_response())
}

/// Replaces a member's roles.
#[utoipa::path(patch, path = "/tenants/{id}/members/{user_id}", tag = "tenants", params(("id" = String, Path, description = "The tenant's id"), ("user_id" = String, Path, description = "The member's user id")), request_body = members::SetRoles, responses((status = 200, description = "The member as changed", body = members::MemberView)))]
async fn set_member_roles(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path((id, user_id)): Path<(String, String)>,
    Json(input): Json<members::SetRoles>,
) -> Result<Response> {
    let now = state.clock.now();
    let member = members::set_roles(&state, &principal, &id, &user_id, input, &ctx, now).await?;
    Ok(axum::Json(member).into_response())
}

/// Removes a member (or the caller leaves).
#[utoipa::path(delete, path = "/tenants/{id}/members/{user_id}", tag = "tenants", params(("id" = String, Path, description = "The tenant's id"), ("user_id" = String, Path, description = "The member's user id")), responses((status = 204, description = "Removed")))]
async fn remove_member(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path((id, user_id)): Path<(String, String)>,
) -> Result<Response> {
    members::remove(&state, &principal, &id, &user_id, &ctx, state.clock.now()).await?;
    Ok(super::no_content())
}

/// Invites someone by email address.
#[utoipa::path(post, path = "/tenants/{id}/invitations", tag = "tenants", params(("id" = String, Path, description = "The tenant's id")), request_body = invitations::Invite, responses((status = 201, description = "The invitation (mailed)", body = invitations::InvitationView)))]
async fn invite(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(id): Path<String>,
    Json(input): Json<invitations::Invite>,
) -> Result<Response> {
    let now = state.clock.now();
    let created = invitations::create(&state, &principal, &id, input, &ctx, now).await?;
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

/// The tenant's open invitations.
#[utoipa::path(get, path = "/tenants/{id}/invitations", tag = "tenants", params(("id" = String, Path, description = "The tenant's id")), responses((status = 200, description = "The open invitations", body = InvitationList)))]
async fn list_invitations(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    let list = invitations::list(&state, &principal, &id).await?;
    Ok(axum::Json(InvitationList { invitations: list }).into_response())
}

/// Revokes an invitation.
#[utoipa::path(delete, path = "/tenants/{id}/invitations/{invitation_id}", tag = "tenants", params(("id" = String, Path, description = "The tenant's id"), ("invitation_id" = String, Path, description = "The invitation's id")), responses((status = 204, description = "Revoked")))]
async fn revoke_invitation(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path((id, invitation_id)): Path<(String, String)>,
) -> Result<Response> {
    let now = state.clock.now();
    invitations::revoke(&state, &principal, &id, &invitation_id, &ctx, now).await?;
    Ok(super::no_content())
}

/// Accepts an invitation with the token from its mail.
#[utoipa::path(post, path = "/invitations/accept", tag = "tenants", request_body = invitations::Accept, responses((status = 200, description = "The tenant joined", body = TenantView)))]
async fn accept_invitation(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Json(input): Json<invitations::Accept>,
) -> Result<Response> {
    let now = state.clock.now();
    let tenant = invitations::accept(&state, &principal, input, &ctx, now).await?;
    Ok(axum::Json(tenant).into_response())
}

/// The tenant's roles and their permissions.
#[utoipa::path(get, path = "/tenants/{id}/roles", tag = "tenants", params(("id" = String, Path, description = "The tenant's id")), responses((status = 200, description = "The roles", body = RoleList)))]
async fn list_roles(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    let list = roles::list(&state, &principal, &id).await?;
    Ok(axum::Json(RoleList { roles: list }).into_response())
}

/// Creates or replaces a custom role.
#[utoipa::path(put, path = "/tenants/{id}/roles/{name}", tag = "tenants", params(("id" = String, Path, description = "The tenant's id"), ("name" = String, Path, description = "The role's name")), request_body = roles::PutRole, responses((status = 200, description = "The role", body = roles::RoleView)))]
async fn put_role(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path((id, name)): Path<(String, String)>,
    Json(input): Json<roles::PutRole>,
) -> Result<Response> {
    let now = state.clock.now();
    let role = roles::put(&state, &principal, &id, &name, input, &ctx, now).await?;
    Ok(axum::Json(role).into_response())
}

/// Deletes a custom role.
#[utoipa::path(delete, path = "/tenants/{id}/roles/{name}", tag = "tenants", params(("id" = String, Path, description = "The tenant's id"), ("name" = String, Path, description = "The role's name")), responses((status = 204, description = "Deleted")))]
async fn delete_role(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response> {
    roles::delete(&state, &principal, &id, &name, &ctx, state.clock.now()).await?;
    Ok(super::no_content())
}

/// The permissions the tenant's roles may grant.
#[utoipa::path(get, path = "/tenants/{id}/permissions", tag = "tenants", params(("id" = String, Path, description = "The tenant's id")), responses((status = 200, description = "The permissions", body = PermissionList)))]
async fn list_permissions(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    let list = roles::permissions(&state, &principal, &id).await?;
    Ok(axum::Json(PermissionList { permissions: list }).into_response())
}

/// Adds a custom permission.
#[utoipa::path(post, path = "/tenants/{id}/permissions", tag = "tenants", params(("id" = String, Path, description = "The tenant's id")), request_body = roles::AddPermission, responses((status = 201, description = "Added", body = roles::PermissionView), (status = 200, description = "It was there already", body = roles::PermissionView)))]
async fn add_permission(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(id): Path<String>,
    Json(input): Json<roles::AddPermission>,
) -> Result<Response> {
    let now = state.clock.now();
    let (new, p) = roles::add_permission(&state, &principal, &id, input, &ctx, now).await?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(p)).into_response())
}

/// Creates an API key of the tenant.
#[utoipa::path(post, path = "/tenants/{id}/api-keys", tag = "tenants", params(("id" = String, Path, description = "The tenant's id")), request_body = api_keys::CreateKey, responses((status = 201, description = "The key; its secret is in this answer only", body = api_keys::CreatedKey)))]
async fn create_key(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(id): Path<String>,
    Json(input): Json<api_keys::CreateKey>,
) -> Result<Response> {
    let now = state.clock.now();
    let key = api_keys::create(&state, &principal, &id, input, &ctx, now).await?;
    Ok(super::no_store(
        (StatusCode::CREATED, axum::Json(key)).into_response(),
    ))
}

/// The tenant's API keys.
#[utoipa::path(get, path = "/tenants/{id}/api-keys", tag = "tenants", params(("id" = String, Path, description = "The tenant's id")), responses((status = 200, description = "The keys (never their secrets)", body = ApiKeyList)))]
async fn list_keys(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    let list = api_keys::list(&state, &principal, &id).await?;
    Ok(axum::Json(ApiKeyList { api_keys: list }).into_response())
}

/// Revokes an API key at once.
#[utoipa::path(delete, path = "/tenants/{id}/api-keys/{key_id}", tag = "tenants", params(("id" = String, Path, description = "The tenant's id"), ("key_id" = String, Path, description = "The API key's id")), responses((status = 204, description = "Revoked")))]
async fn revoke_key(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path((id, key_id)): Path<(String, String)>,
) -> Result<Response> {
    api_keys::revoke(&state, &principal, &id, &key_id, &ctx, state.clock.now()).await?;
    Ok(super::no_content())
}

/// Rotates an API key: a new secret, the old one honoured for the overlap.
#[utoipa::path(post, path = "/tenants/{id}/api-keys/{key_id}/rotate", tag = "tenants", params(("id" = String, Path, description = "The tenant's id"), ("key_id" = String, Path, description = "The API key's id")), request_body = Option<api_keys::Rotate>, responses((status = 201, description = "The new key; its secret is in this answer only", body = api_keys::CreatedKey)))]
async fn rotate_key(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path((id, key_id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let now = state.clock.now();
    // The body is optional: `{}` or nothing rotates with the default overlap.
    let input: api_keys::Rotate = if body.iter().all(u8::is_ascii_whitespace) {
        api_keys::Rotate::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            crate::Error::bad_request(crate::error::Code::InvalidBody, e.to_string())
        })?
    };
    let key = api_keys::rotate(&state, &principal, &id, &key_id, input, &ctx, now).await?;
    Ok(super::no_store(
        (StatusCode::CREATED, axum::Json(key)).into_response(),
    ))
}

/// The tenant's IP allow-list.
#[utoipa::path(get, path = "/tenants/{id}/ip-allowlist", tag = "tenants", params(("id" = String, Path, description = "The tenant's id")), responses((status = 200, description = "The allow-list", body = policy::AllowListView)))]
async fn get_allow_list(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(axum::Json(policy::allow_list(&state, &principal, &id).await?).into_response())
}

/// Replaces the tenant's IP allow-list.
#[utoipa::path(put, path = "/tenants/{id}/ip-allowlist", tag = "tenants", params(("id" = String, Path, description = "The tenant's id")), request_body = policy::SetAllowList, responses((status = 200, description = "The allow-list as set", body = policy::AllowListView)))]
async fn set_allow_list(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(id): Path<String>,
    Json(input): Json<policy::SetAllowList>,
) -> Result<Response> {
    let now = state.clock.now();
    let list = policy::set_allow_list(&state, &principal, &id, input, &ctx, now).await?;
    Ok(axum::Json(list).into_response())
}

/// The tenant's MFA policy.
#[utoipa::path(get, path = "/tenants/{id}/mfa-policy", tag = "tenants", params(("id" = String, Path, description = "The tenant's id")), responses((status = 200, description = "The policy", body = policy::MfaPolicy)))]
async fn get_mfa_policy(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(axum::Json(policy::mfa_policy(&state, &principal, &id).await?).into_response())
}

/// Sets the tenant's MFA policy: with `required`, members get tokens for the tenant only from a
/// sign-in with a second factor. Turning it on needs such a sign-in of the caller's own.
#[utoipa::path(put, path = "/tenants/{id}/mfa-policy", tag = "tenants", params(("id" = String, Path, description = "The tenant's id")), request_body = policy::MfaPolicy, responses((status = 200, description = "The policy as set", body = policy::MfaPolicy)))]
async fn set_mfa_policy(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(id): Path<String>,
    Json(input): Json<policy::MfaPolicy>,
) -> Result<Response> {
    let now = state.clock.now();
    let set = policy::set_mfa_policy(&state, &principal, &id, input, &ctx, now).await?;
    Ok(axum::Json(set).into_response())
}

/// The tenant's plan and limits.
#[utoipa::path(get, path = "/tenants/{id}/plan", tag = "tenants", params(("id" = String, Path, description = "The tenant's id")), responses((status = 200, description = "The plan and its limits", body = policy::PlanView)))]
async fn get_plan(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(axum::Json(policy::get_plan(&state, &principal, &id).await?).into_response())
}

/// Changes a tenant's plan or overrides its limits.
#[utoipa::path(patch, path = "/tenants/{id}/plan", tag = "tenants", params(("id" = String, Path, description = "The tenant's id")), request_body = policy::SetPlan, responses((status = 200, description = "The plan as changed", body = policy::PlanView)))]
async fn set_plan(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(id): Path<String>,
    Json(input): Json<policy::SetPlan>,
) -> Result<Response> {
    let now = state.clock.now();
    let plan = policy::set_plan(&state, &principal, &id, input, &ctx, now).await?;
    Ok(axum::Json(plan).into_response())
}

/// The tenant's usage against its plan's limits.
#[utoipa::path(get, path = "/tenants/{id}/usage", tag = "tenants", params(("id" = String, Path, description = "The tenant's id")), responses((status = 200, description = "Usage against the limits", body = policy::UsageView)))]
async fn usage(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(axum::Json(policy::usage(&state, &principal, &id).await?).into_response())
}

/// The tenant's audit log, oldest first.
#[utoipa::path(get, path = "/tenants/{id}/audit", tag = "tenants", params(("id" = String, Path, description = "The tenant's id"), audit::Filter), responses((status = 200, description = "One page of audit entries", body = audit::AuditPage)))]
async fn audit_log(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
    Query(filter): Query<audit::Filter>,
) -> Result<Response> {
    let (entries, next) = tenants::audit_log(&state, &principal, &id, &filter).await?;
    Ok(axum::Json(audit::AuditPage {
        entries,
        next_cursor: next,
    })
    .into_response())
}

/// The tenant's claimed domains.
#[utoipa::path(get, path = "/tenants/{id}/domains", tag = "tenants", params(("id" = String, Path, description = "The tenant's id")), responses((status = 200, description = "The domains", body = Vec<domains::DomainView>)))]
async fn list_domains(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(axum::Json(domains::list(&state, &principal, &id).await?).into_response())
}

/// Claims a domain; verified through a DNS TXT record.
#[utoipa::path(post, path = "/tenants/{id}/domains", tag = "tenants", params(("id" = String, Path, description = "The tenant's id")), request_body = domains::ClaimDomain, responses((status = 201, description = "The claim and its DNS challenge", body = domains::DomainView)))]
async fn claim_domain(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(id): Path<String>,
    Json(input): Json<domains::ClaimDomain>,
) -> Result<Response> {
    let now = state.clock.now();
    let view = domains::claim(&state, &principal, &id, input, &ctx, now).await?;
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

/// Releases a claimed domain.
#[utoipa::path(delete, path = "/tenants/{id}/domains/{domain}", tag = "tenants", params(("id" = String, Path, description = "The tenant's id"), ("domain" = String, Path, description = "The domain name")), responses((status = 204, description = "Released")))]
async fn release_domain(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path((id, domain)): Path<(String, String)>,
) -> Result<Response> {
    let now = state.clock.now();
    domains::release(&state, &principal, &id, &domain, &ctx, now).await?;
    Ok(super::no_content())
}

/// Binds a verified domain to an identity provider: its addresses sign in there (and, with
/// `disable_passwords`, only there).
#[utoipa::path(put, path = "/tenants/{id}/domains/{domain}/sign-in", tag = "tenants", params(("id" = String, Path, description = "The tenant's id"), ("domain" = String, Path, description = "The domain name")), request_body = domains::DomainSignIn, responses((status = 200, description = "The domain with its sign-in", body = domains::DomainView)))]
async fn domain_sign_in(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path((id, domain)): Path<(String, String)>,
    Json(input): Json<domains::DomainSignIn>,
) -> Result<Response> {
    let now = state.clock.now();
    let view = domains::set_sign_in(&state, &principal, &id, &domain, input, &ctx, now).await?;
    Ok(axum::Json(view).into_response())
}

/// Marks a domain as verified (the operator checked its DNS record).
#[utoipa::path(post, path = "/tenants/{id}/domains/{domain}/verify", tag = "tenants", params(("id" = String, Path, description = "The tenant's id"), ("domain" = String, Path, description = "The domain name")), responses((status = 200, description = "The domain as verified", body = domains::DomainView)))]
async fn verify_domain(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path((id, domain)): Path<(String, String)>,
) -> Result<Response> {
    let now = state.clock.now();
    let view = domains::verify(&state, &principal, &id, &domain, &ctx, now).await?;
    Ok(axum::Json(view).into_response())
}
