//! The user's profile: names, locale, time zone and free-form preferences.

use serde::{Deserialize, Deserializer, Serialize};

use crate::authz::{self, Permission, Principal};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::users::{self, Profile};

use super::validate_text;

/// Largest accepted `preferences` object, serialised, bytes.
pub const MAX_PREFERENCES_BYTES: usize = 16 * 1024;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProfileView {
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub locale: Option<String>,
    pub timezone: Option<String>,
    pub preferences: serde_json::Value,
    pub updated_at: String,
}

impl From<Profile> for ProfileView {
    fn from(p: Profile) -> Self {
        Self {
            display_name: p.display_name,
            given_name: p.given_name,
            family_name: p.family_name,
            locale: p.locale,
            timezone: p.timezone,
            preferences: serde_json::from_str(&p.preferences)
                .unwrap_or_else(|_| serde_json::json!({})),
            updated_at: crate::clock::rfc3339(p.updated_at),
        }
    }
}

/// A partial update: an absent field stays as it is, `null` clears it.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfilePatch {
    #[serde(default, deserialize_with = "present")]
    pub display_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub given_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub family_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub locale: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub timezone: Option<Option<String>>,
    /// Replaces the whole object.
    #[serde(default)]
    pub preferences: Option<serde_json::Value>,
}

/// Tells a field that is present (even as `null`) from one that is absent.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

pub async fn get(store: &Store, principal: &Principal) -> Result<ProfileView> {
    let caller = authz::require_user(principal, Permission::ReadOwnAccount)?;
    users::find_profile(store.pool(), &caller.user_id)
        .await?
        .map(Into::into)
        .ok_or(Error::NotFound)
}

pub async fn update(
    store: &Store,
    principal: &Principal,
    patch: ProfilePatch,
    now: i64,
) -> Result<ProfileView> {
    let caller = authz::require_user(principal, Permission::ManageOwnAccount)?;
    let user_id = caller.user_id.as_str();
    let current = users::find_profile(store.pool(), user_id)
        .await?
        .ok_or(Error::NotFound)?;
    let p = apply(current, patch, now)?;
    users::update_profile(store.writer(), user_id, &p).await?;
    Ok(p.into())
}

/// `patch` applied to `p`, validated (the user's own `PATCH /identity/profile` and the
/// operator's `PATCH /admin/users/{id}`).
pub fn apply(mut p: Profile, patch: ProfilePatch, now: i64) -> Result<Profile> {
    for (field, value, max, target) in [
        ("display_name", patch.display_name, 100, &mut p.display_name),
        ("given_name", patch.given_name, 100, &mut p.given_name),
        ("family_name", patch.family_name, 100, &mut p.family_name),
        ("locale", patch.locale, 35, &mut p.locale),
        ("timezone", patch.timezone, 64, &mut p.timezone),
    ] {
        if let Some(value) = value {
            if let Some(v) = &value {
                validate_text(field, v, max)?;
            }
            *target = value.filter(|v| !v.trim().is_empty());
        }
    }
    if let Some(locale) = &p.locale
        && !locale
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Error::invalid(
            "locale",
            "must be a BCP 47 language tag such as en-GB",
        ));
    }
    if let Some(prefs) = patch.preferences {
        if !prefs.is_object() {
            return Err(Error::invalid("preferences", "must be a JSON object"));
        }
        let text = prefs.to_string();
        if text.len() > MAX_PREFERENCES_BYTES {
            return Err(Error::invalid(
                "preferences",
                format!("must be at most {MAX_PREFERENCES_BYTES} bytes"),
            ));
        }
        p.preferences = text;
    }
    p.updated_at = now;
    Ok(p)
}
