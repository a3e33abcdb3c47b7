//! Master-key rotation: every secret sealed under the master key (signing keys' private parts,
//! queued mail, webhook secrets, second-factor secrets, identity providers' client secrets) is opened with the old key and sealed with the new one, in one
//! transaction: either all move or none.

use anyhow::Context;

use crate::crypto::MasterKey;
use crate::store::Store;
use crate::store::secrets;

/// Re-seals everything under `new`; returns how many values moved.
pub async fn rotate(
    store: &Store,
    old: &MasterKey,
    new: &MasterKey,
    now: i64,
) -> anyhow::Result<usize> {
    let mut tx = store.begin().await?;
    let sealed = secrets::all_sealed(&mut tx).await?;
    for s in &sealed {
        let plain = zeroize::Zeroizing::new(old.open(&s.context, &s.value).with_context(|| {
            format!(
                "{} {} does not open with the current master key",
                s.table, s.id
            )
        })?);
        secrets::replace(&mut *tx, s.table, &s.id, &new.seal(&s.context, &plain)).await?;
    }
    let count = format!("{} secrets re-sealed", sealed.len());
    let entry = crate::audit::Entry::success(
        crate::audit::Actor::System,
        crate::audit::action::ROTATE_MASTER_KEY,
    )
    .reason(&count);
    crate::audit::record(
        &mut *tx,
        &crate::context::RequestContext::system(),
        &entry,
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(sealed.len())
}
