//! Every value sealed under the master key, for master-key rotation: signing keys, queued mail,
//! webhook secrets, second-factor secrets and identity providers' client secrets.

use sqlx::{Any, Executor};

/// A sealed value: where it lives, its sealing context, the ciphertext.
pub struct Sealed {
    pub table: &'static str,
    pub id: String,
    pub context: String,
    pub value: Vec<u8>,
}

pub async fn all_sealed(tx: &mut super::Tx) -> Result<Vec<Sealed>, sqlx::Error> {
    let mut out = Vec::new();
    let keys: Vec<(String, Vec<u8>)> = sqlx::query_as("SELECT kid, private_key FROM signing_keys")
        .fetch_all(&mut **tx)
        .await?;
    out.extend(keys.into_iter().map(|(id, value)| Sealed {
        table: "signing_keys",
        context: id.clone(),
        id,
        value,
    }));
    let mail: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT id, payload FROM mail_jobs WHERE payload IS NOT NULL")
            .fetch_all(&mut **tx)
            .await?;
    out.extend(mail.into_iter().map(|(id, value)| Sealed {
        table: "mail_jobs",
        context: format!("mail_job:{id}"),
        id,
        value,
    }));
    let hooks: Vec<(String, Vec<u8>)> = sqlx::query_as("SELECT id, secret FROM webhooks")
        .fetch_all(&mut **tx)
        .await?;
    out.extend(hooks.into_iter().map(|(id, value)| Sealed {
        table: "webhooks",
        context: format!("webhook:{id}"),
        id,
        value,
    }));
    let factors: Vec<(String, Vec<u8>)> = sqlx::query_as("SELECT id, secret FROM mfa_factors")
        .fetch_all(&mut **tx)
        .await?;
    out.extend(factors.into_iter().map(|(id, value)| Sealed {
        table: "mfa_factors",
        context: crate::mfa::seal_context(&id),
        id,
        value,
    }));
    let idps: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT name, client_secret FROM identity_providers")
            .fetch_all(&mut **tx)
            .await?;
    out.extend(idps.into_iter().map(|(id, value)| Sealed {
        table: "identity_providers",
        context: crate::federation::secret_context(&id),
        id,
        value,
    }));
    Ok(out)
}

pub async fn replace<'e>(
    db: impl Executor<'e, Database = Any>,
    table: &str,
    id: &str,
    value: &[u8],
) -> Result<(), sqlx::Error> {
    let sql = match table {
        "signing_keys" => "UPDATE signing_keys SET private_key = $1 WHERE kid = $2",
        "mail_jobs" => "UPDATE mail_jobs SET payload = $1 WHERE id = $2",
        "webhooks" => "UPDATE webhooks SET secret = $1 WHERE id = $2",
        "mfa_factors" => "UPDATE mfa_factors SET secret = $1 WHERE id = $2",
        "identity_providers" => "UPDATE identity_providers SET client_secret = $1 WHERE name = $2",
        other => {
            return Err(sqlx::Error::Protocol(format!(
                "no sealed values in {other}"
            )));
        }
    };
    sqlx::query(sql)
        .bind(value)
        .bind(id)
        .execute(db)
        .await
        .map(|_| ())
}
