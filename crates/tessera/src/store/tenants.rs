//! Tenants, memberships, member roles, custom roles and application permissions.

use sqlx::{Any, Executor};

/// A row of `tenants`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantRow {
    pub id: String,
    pub slug: String,
    pub name: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub status: String,
    pub personal_of: Option<String>,
    pub settings: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub deleted_at: Option<i64>,
}

/// `SELECT <tenant columns> FROM tenants t <rest>` as one static string.
macro_rules! select_tenants {
    ($rest:literal) => {
        concat!(
            "SELECT t.id, t.slug, t.name, t.type, t.status, t.personal_of, t.settings, \
             t.created_at, t.updated_at, t.deleted_at FROM tenants t ",
            $rest
        )
    };
}

pub struct NewTenant<'a> {
    pub id: &'a str,
    pub slug: &'a str,
    pub name: &'a str,
    pub kind: &'a str,
    pub personal_of: Option<&'a str>,
    pub now: i64,
}

/// Inserts a tenant; a taken slug (or a second personal tenant) is a unique violation.
pub async fn insert<'e>(
    db: impl Executor<'e, Database = Any>,
    t: &NewTenant<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO tenants (id, slug, name, type, status, personal_of, settings, created_at, \
         updated_at) VALUES ($1, $2, $3, $4, 'active', $5, '{}', $6, $6)",
    )
    .bind(t.id)
    .bind(t.slug)
    .bind(t.name)
    .bind(t.kind)
    .bind(t.personal_of)
    .bind(t.now)
    .execute(db)
    .await
    .map(|_| ())
}

pub async fn find<'e>(
    db: impl Executor<'e, Database = Any>,
    id: &str,
) -> Result<Option<TenantRow>, sqlx::Error> {
    if !super::storable(id) {
        return Ok(None);
    }
    sqlx::query_as(select_tenants!("WHERE t.id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// A tenant by id or by slug.
pub async fn find_by_id_or_slug<'e>(
    db: impl Executor<'e, Database = Any>,
    key: &str,
) -> Result<Option<TenantRow>, sqlx::Error> {
    if !super::storable(key) {
        return Ok(None);
    }
    sqlx::query_as(select_tenants!("WHERE t.id = $1 OR t.slug = $1"))
        .bind(key)
        .fetch_optional(db)
        .await
}

/// Sets name and slug (either may stay as is).
pub async fn update<'e>(
    db: impl Executor<'e, Database = Any>,
    id: &str,
    name: &str,
    slug: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE tenants SET name = $2, slug = $3, updated_at = $4 WHERE id = $1")
        .bind(id)
        .bind(name)
        .bind(slug)
        .bind(now)
        .execute(db)
        .await
        .map(|_| ())
}

pub async fn set_type<'e>(
    db: impl Executor<'e, Database = Any>,
    id: &str,
    kind: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE tenants SET type = $2, updated_at = $3 WHERE id = $1")
        .bind(id)
        .bind(kind)
        .bind(now)
        .execute(db)
        .await
        .map(|_| ())
}

/// Sets the status (and `deleted_at` when it becomes `deleted`).
pub async fn set_status<'e>(
    db: impl Executor<'e, Database = Any>,
    id: &str,
    status: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE tenants SET status = $2, updated_at = $3, \
         deleted_at = CASE WHEN $2 = 'deleted' THEN $3 ELSE NULL END WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .bind(now)
    .execute(db)
    .await
    .map(|_| ())
}

/// Removes tenants deleted before `before` for good (memberships, roles and invitations go
/// with them). Returns how many.
pub async fn purge_deleted<'e>(
    db: impl Executor<'e, Database = Any>,
    before: i64,
) -> Result<u64, sqlx::Error> {
    sqlx::query("DELETE FROM tenants WHERE status = 'deleted' AND deleted_at < $1")
        .bind(before)
        .execute(db)
        .await
        .map(|r| r.rows_affected())
}

// ---------------------------------------------------------------- memberships

/// The tenants `user_id` belongs to (deleted ones left out), oldest membership first.
pub async fn of_user<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: &str,
) -> Result<Vec<TenantRow>, sqlx::Error> {
    sqlx::query_as(select_tenants!(
        "JOIN memberships m ON m.tenant_id = t.id \
         WHERE m.user_id = $1 AND t.status <> 'deleted' ORDER BY m.created_at, t.id"
    ))
    .bind(user_id)
    .fetch_all(db)
    .await
}

/// Every `(tenant_id, role)` that `user_id` holds.
pub async fn roles_of_user<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: &str,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    // Through `memberships` (indexed by user): `member_roles` is keyed by tenant first, so a
    // filter on its user alone would scan every role of every tenant.
    sqlx::query_as(
        "SELECT r.tenant_id, r.role FROM memberships m \
         JOIN member_roles r ON r.tenant_id = m.tenant_id AND r.user_id = m.user_id \
         WHERE m.user_id = $1 ORDER BY r.role",
    )
    .bind(user_id)
    .fetch_all(db)
    .await
}

/// The roles of `user_id` in `tenant_id`, or `None` when they are not a member (one query).
pub async fn member_roles<'e>(
    db: impl Executor<'e, Database = Any>,
    tenant_id: &str,
    user_id: &str,
) -> Result<Option<Vec<String>>, sqlx::Error> {
    if !super::storable(tenant_id) || !super::storable(user_id) {
        return Ok(None);
    }
    let rows: Vec<(Option<String>,)> = sqlx::query_as(
        "SELECT r.role FROM memberships m LEFT JOIN member_roles r \
         ON r.tenant_id = m.tenant_id AND r.user_id = m.user_id \
         WHERE m.tenant_id = $1 AND m.user_id = $2 ORDER BY r.role",
    )
    .bind(tenant_id)
    .bind(user_id)
    .fetch_all(db)
    .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(rows.into_iter().filter_map(|(r,)| r).collect()))
}

/// A member as listed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MemberRow {
    pub user_id: String,
    pub email: String,
    pub display_name: Option<String>,
    pub joined_at: i64,
}

pub async fn members<'e>(
    db: impl Executor<'e, Database = Any>,
    tenant_id: &str,
) -> Result<Vec<MemberRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT m.user_id, u.email, p.display_name, m.created_at AS joined_at \
         FROM memberships m JOIN users u ON u.id = m.user_id \
         LEFT JOIN profiles p ON p.user_id = m.user_id \
         WHERE m.tenant_id = $1 ORDER BY m.created_at, m.user_id",
    )
    .bind(tenant_id)
    .fetch_all(db)
    .await
}

/// Every `(user_id, role)` in `tenant_id`.
pub async fn roles_in<'e>(
    db: impl Executor<'e, Database = Any>,
    tenant_id: &str,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as("SELECT user_id, role FROM member_roles WHERE tenant_id = $1 ORDER BY role")
        .bind(tenant_id)
        .fetch_all(db)
        .await
}

/// Adds `user_id` to `tenant_id` with `roles` (a member already there keeps the old roles and
/// gains these).
pub async fn add_member(
    tx: &mut super::Tx,
    tenant_id: &str,
    user_id: &str,
    roles: &[String],
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO memberships (tenant_id, user_id, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant_id, user_id) DO NOTHING",
    )
    .bind(tenant_id)
    .bind(user_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    for role in roles {
        sqlx::query(
            "INSERT INTO member_roles (tenant_id, user_id, role) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id, user_id, role) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(user_id)
        .bind(role)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Replaces the roles of a member.
pub async fn set_roles(
    tx: &mut super::Tx,
    tenant_id: &str,
    user_id: &str,
    roles: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM member_roles WHERE tenant_id = $1 AND user_id = $2")
        .bind(tenant_id)
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    for role in roles {
        sqlx::query("INSERT INTO member_roles (tenant_id, user_id, role) VALUES ($1, $2, $3)")
            .bind(tenant_id)
            .bind(user_id)
            .bind(role)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Removes a member (their roles go with the membership). True if there was one.
pub async fn remove_member(
    tx: &mut super::Tx,
    tenant_id: &str,
    user_id: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query("DELETE FROM member_roles WHERE tenant_id = $1 AND user_id = $2")
        .bind(tenant_id)
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    let done = sqlx::query("DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2")
        .bind(tenant_id)
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// How many members hold `role` in `tenant_id`.
pub async fn count_with_role<'e>(
    db: impl Executor<'e, Database = Any>,
    tenant_id: &str,
    role: &str,
) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM member_roles WHERE tenant_id = $1 AND role = $2")
            .bind(tenant_id)
            .bind(role)
            .fetch_one(db)
            .await?;
    Ok(n)
}

/// Locks the tenant row for the rest of `tx` on PostgreSQL (SQLite transactions that write are
/// serialised already), so two concurrent demotions cannot both pass the last-owner check.
pub async fn lock(
    tx: &mut super::Tx,
    backend: super::Backend,
    id: &str,
) -> Result<(), sqlx::Error> {
    if backend == super::Backend::Postgres {
        sqlx::query("SELECT id FROM tenants WHERE id = $1 FOR UPDATE")
            .bind(id)
            .execute(&mut **tx)
            .await?;
    } else {
        // Takes SQLite's write lock now rather than at the first write.
        sqlx::query("UPDATE tenants SET updated_at = updated_at WHERE id = $1")
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

// ---------------------------------------------------------------- custom roles and permissions

/// `(role, permission)` of every custom role of `tenant_id`, and the roles without any.
pub async fn custom_roles<'e>(
    db: impl Executor<'e, Database = Any>,
    tenant_id: &str,
) -> Result<Vec<(String, Option<String>, Option<String>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT r.name, r.description, p.permission FROM tenant_roles r \
         LEFT JOIN tenant_role_permissions p ON p.tenant_id = r.tenant_id AND p.role = r.name \
         WHERE r.tenant_id = $1 ORDER BY r.name, p.permission",
    )
    .bind(tenant_id)
    .fetch_all(db)
    .await
}

pub async fn put_custom_role(
    tx: &mut super::Tx,
    tenant_id: &str,
    name: &str,
    description: Option<&str>,
    permissions: &[String],
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO tenant_roles (tenant_id, name, description, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id, name) DO UPDATE SET description = excluded.description",
    )
    .bind(tenant_id)
    .bind(name)
    .bind(description)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM tenant_role_permissions WHERE tenant_id = $1 AND role = $2")
        .bind(tenant_id)
        .bind(name)
        .execute(&mut **tx)
        .await?;
    for p in permissions {
        sqlx::query(
            "INSERT INTO tenant_role_permissions (tenant_id, role, permission) VALUES ($1, $2, $3)",
        )
        .bind(tenant_id)
        .bind(name)
        .bind(p)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Deletes a custom role and takes it from every member. True if it existed.
pub async fn delete_custom_role(
    tx: &mut super::Tx,
    tenant_id: &str,
    name: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query("DELETE FROM member_roles WHERE tenant_id = $1 AND role = $2")
        .bind(tenant_id)
        .bind(name)
        .execute(&mut **tx)
        .await?;
    let done = sqlx::query("DELETE FROM tenant_roles WHERE tenant_id = $1 AND name = $2")
        .bind(tenant_id)
        .bind(name)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// The application permissions registered in `tenant_id`.
pub async fn app_permissions<'e>(
    db: impl Executor<'e, Database = Any>,
    tenant_id: &str,
) -> Result<Vec<(String, Option<String>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT name, description FROM tenant_permissions WHERE tenant_id = $1 ORDER BY name",
    )
    .bind(tenant_id)
    .fetch_all(db)
    .await
}

/// Registers an application permission; false when it already existed.
pub async fn add_app_permission<'e>(
    db: impl Executor<'e, Database = Any>,
    tenant_id: &str,
    name: &str,
    description: Option<&str>,
    now: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "INSERT INTO tenant_permissions (tenant_id, name, description, created_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, name) DO NOTHING",
    )
    .bind(tenant_id)
    .bind(name)
    .bind(description)
    .bind(now)
    .execute(db)
    .await
    .map(|r| r.rows_affected() > 0)
}

/// Remembers the tenant a user signed in to last.
pub async fn set_last_tenant<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: &str,
    tenant_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET last_tenant_id = $2 WHERE id = $1")
        .bind(user_id)
        .bind(tenant_id)
        .execute(db)
        .await
        .map(|_| ())
}

/// How many members `tenant_id` has.
pub async fn count_members<'e>(
    db: impl Executor<'e, Database = Any>,
    tenant_id: &str,
) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM memberships WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_one(db)
        .await?;
    Ok(n)
}

/// Replaces a tenant's settings JSON.
pub async fn set_settings<'e>(
    db: impl Executor<'e, Database = Any>,
    tenant_id: &str,
    settings: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE tenants SET settings = $2, updated_at = $3 WHERE id = $1")
        .bind(tenant_id)
        .bind(settings)
        .bind(now)
        .execute(db)
        .await
        .map(|_| ())
}
