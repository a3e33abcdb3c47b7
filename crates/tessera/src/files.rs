//! Files Tessera keeps next to its data (the zero-configuration SQLite database, the development
//! master key, mail written to a folder): owner-only, folders 0700 and files 0600.

use std::path::Path;

use anyhow::Context;

/// Creates `dir` (and its parents) if needed and makes it owner-only (0700).
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    set_mode(dir, 0o700)
}

/// Makes an existing file owner-only (0600); a missing file is left alone.
pub fn private_file(path: &Path) -> anyhow::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    set_mode(path, 0o600)
}

/// Writes a new file that is owner-only (0600) from its creation, and syncs it to disk.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    create_private(path, bytes)?.sync_all()?;
    Ok(())
}

/// Writes `bytes` owner-only under a temporary name, then renames it to `path`: a reader of the
/// folder never sees a partial file. Not synced: for development mail, whose job is recorded in
/// the database anyway.
pub fn write_private_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let partial = path.with_file_name(format!(".{name}.partial"));
    create_private(&partial, bytes)?;
    std::fs::rename(&partial, path).with_context(|| format!("renaming to {}", path.display()))
}

fn create_private(path: &Path, bytes: &[u8]) -> anyhow::Result<std::fs::File> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(file)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("restricting {}", path.display()))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> anyhow::Result<()> {
    Ok(())
}
