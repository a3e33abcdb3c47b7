//! Global roles of users (`user_roles`): a user may hold several.

use sqlx::{Any, Executor};

use crate::authz::{Role, parse_roles};

/// The roles `user_id` holds.
pub async fn roles_of<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: &str,
) -> Result<Vec<Role>, sqlx::Error> {
    if !super::storable(user_id) {
        return Ok(Vec::new());
    }
    let names: Vec<(String,)> =
        sqlx::query_as("SELECT role FROM user_roles WHERE user_id = $1 ORDER BY role")
            .bind(user_id)
            .fetch_all(db)
            .await?;
    Ok(parse_roles(names.iter().map(|(n,)| n.as_str())))
}

/// Grants `role` to `user_id` (idempotent).
pub async fn grant<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: &str,
    role: Role,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO user_roles (user_id, role, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id, role) DO NOTHING",
    )
    .bind(user_id)
    .bind(role.as_str())
    .bind(now)
    .execute(db)
    .await
    .map(|_| ())
}

/// Replaces the roles of `user_id` with `roles`.
pub async fn set(
    tx: &mut super::Tx,
    user_id: &str,
    roles: &[Role],
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM user_roles WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    for role in roles {
        grant(&mut **tx, user_id, *role, now).await?;
    }
    Ok(())
}
