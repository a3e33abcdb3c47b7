//! `/tenants/*` and `/invitations/accept`: tenants, members, invitations, roles and
//! permissions, API keys, allow-lists, plans and the tenant's audit log. Handlers extract,
//! call `crate::tenants` and respond; what a caller may do is decided there, through `authz`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use serde_json::json;

use super::extract::{Caller, Context, Json};
use crate::app::AppState;
use crate::audit;
use crate::authz::Permission;
use crate::error::Result;
use crate::tenants::{
    self, CreateTenant, UpdateTenant, api_keys, domains, invitations, members, policy, roles,
};

pub fn router() -> super::Routes {
    use Permission::{ActInTenant, ManageTenants, UseTenants};
    super::Routes::default()
        .guarded("/tenants", get(list).post(create), UseTenants)
        .guarded(
            "/tenants/{id}",
            get(get_one).patch(update).delete(delete_tenant),
            ActInTenant,
        )
        .guarded("/tenants/{id}/suspend", post(suspend), ManageTenants)
        .guarded("/tenants/{id}/reactivate", post(reactivate), ManageTenants)
        .guarded("/tenants/{id}/members", get(list_members), ActInTenant)
        .guarded(
            "/tenants/{id}/members/{user_id}",
            patch(set_member_roles).delete(remove_member),
            ActInTenant,
        )
        .guarded(
            "/tenants/{id}/invitations",
            get(list_invitations).post(invite),
            ActInTenant,
        )
        .guarded(
            "/tenants/{id}/invitations/{invitation_id}",
            delete(revoke_invitation),
            ActInTenant,
        )
        .guarded("/invitations/accept", post(accept_invitation), UseTenants)
        .guarded("/tenants/{id}/roles", get(list_roles), ActInTenant)
        .guarded(
            "/tenants/{id}/roles/{name}",
            put(put_role).delete(delete_role),
            ActInTenant,
        )
        .guarded(
            "/tenants/{id}/permissions",
            get(list_permissions).post(add_permission),
            ActInTenant,
        )
        .guarded(
            "/tenants/{id}/api-keys",
            get(list_keys).post(create_key),
            ActInTenant,
        )
        .guarded(
            "/tenants/{id}/api-keys/{key_id}",
            delete(revoke_key),
            ActInTenant,
        )
        .guarded(
            "/tenants/{id}/api-keys/{key_id}/rotate",
            post(rotate_key),
            ActInTenant,
        )
        .guarded(
            "/tenants/{id}/ip-allowlist",
            get(get_allow_list).put(set_allow_list),
            ActInTenant,
        )
        .guarded("/tenants/{id}/plan", get(get_plan), ActInTenant)
        // Plan overrides are the operator's: the same path, its own guard.
        .guarded("/tenants/{id}/plan", patch(set_plan), ManageTenants)
        .guarded("/tenants/{id}/usage", get(usage), ActInTenant)
        .guarded(
            "/tenants/{id}/domains",
            get(list_domains).post(claim_domain),
            ActInTenant,
        )
        .guarded(
            "/tenants/{id}/domains/{domain}",
            delete(release_domain),
            ActInTenant,
        )
        // Verifying a domain is the operator's check.
        .guarded(
            "/tenants/{id}/domains/{domain}/verify",
            post(verify_domain),
            ManageTenants,
        )
        .guarded("/tenants/{id}/audit", get(audit_log), ActInTenant)
}

async fn create(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Json(input): Json<CreateTenant>,
) -> Result<Response> {
    let tenant = tenants::create(&state, &principal, input, &ctx, state.clock.now()).await?;
    Ok((StatusCode::CREATED, axum::Json(tenant)).into_response())
}

async fn list(State(state): State<AppState>, Caller(principal): Caller) -> Result<Response> {
    let mine = tenants::list_mine(&state, &principal).await?;
    Ok(axum::Json(json!({ "tenants": mine })).into_response())
}

async fn get_one(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(axum::Json(tenants::get(&state, &principal, &id).await?).into_response())
}

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

async fn delete_tenant(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(id): Path<String>,
) -> Result<Response> {
    tenants::delete(&state, &principal, &id, &ctx, state.clock.now()).await?;
    Ok(super::no_content())
}

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

async fn list_members(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    let list = members::list(&state, &principal, &id).await?;
    Ok(axum::Json(json!({ "members": list })).into_response())
}

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

async fn remove_member(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path((id, user_id)): Path<(String, String)>,
) -> Result<Response> {
    members::remove(&state, &principal, &id, &user_id, &ctx, state.clock.now()).await?;
    Ok(super::no_content())
}

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

async fn list_invitations(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    let list = invitations::list(&state, &principal, &id).await?;
    Ok(axum::Json(json!({ "invitations": list })).into_response())
}

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

async fn list_roles(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    let list = roles::list(&state, &principal, &id).await?;
    Ok(axum::Json(json!({ "roles": list })).into_response())
}

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

async fn delete_role(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response> {
    roles::delete(&state, &principal, &id, &name, &ctx, state.clock.now()).await?;
    Ok(super::no_content())
}

async fn list_permissions(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    let list = roles::permissions(&state, &principal, &id).await?;
    Ok(axum::Json(json!({ "permissions": list })).into_response())
}

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

async fn list_keys(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    let list = api_keys::list(&state, &principal, &id).await?;
    Ok(axum::Json(json!({ "api_keys": list })).into_response())
}

async fn revoke_key(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path((id, key_id)): Path<(String, String)>,
) -> Result<Response> {
    api_keys::revoke(&state, &principal, &id, &key_id, &ctx, state.clock.now()).await?;
    Ok(super::no_content())
}

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

async fn get_allow_list(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(axum::Json(policy::allow_list(&state, &principal, &id).await?).into_response())
}

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

async fn get_plan(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(axum::Json(policy::get_plan(&state, &principal, &id).await?).into_response())
}

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

async fn usage(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(axum::Json(policy::usage(&state, &principal, &id).await?).into_response())
}

async fn audit_log(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
    Query(filter): Query<audit::Filter>,
) -> Result<Response> {
    let (entries, next) = tenants::audit_log(&state, &principal, &id, &filter).await?;
    Ok(axum::Json(json!({ "entries": entries, "next_cursor": next })).into_response())
}

async fn list_domains(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(axum::Json(domains::list(&state, &principal, &id).await?).into_response())
}

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
