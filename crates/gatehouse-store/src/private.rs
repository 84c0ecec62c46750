//! Files that hold secrets (the database, the admin token hash, the keyring) are created
//! readable by the owner only, and directories made for them likewise: another local user
//! must not read HMAC secrets or JWT keys off the disk.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::StoreError;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::Io(path.display().to_string(), e)
}

/// Creates `dir` (and missing parents) with mode 0700. An existing directory is left as it
/// is (it may be the user's working directory); the files inside are what is protected.
pub fn create_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))
}

/// Writes `contents` to `path` with mode 0600 (replacing the file).
pub fn write(path: &Path, contents: &[u8]) -> Result<(), StoreError> {
    if let Some(dir) = path.parent() {
        create_dir(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    restrict(&tmp)?;
    f.write_all(contents).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Creates `path` empty with mode 0600 if it does not exist; tightens an existing file that
/// others can read to 0600 (with a warning).
pub fn ensure_file(path: &Path) -> Result<(), StoreError> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => restrict(path),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Sets an existing file to 0600 if group or others have any access.
pub fn restrict(path: &Path) -> Result<(), StoreError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path)(e)),
    };
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(file = %path.display(), "file was readable by others; setting mode 0600");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_and_dirs_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let f = dir.join("secret");
        write(&f, b"x").unwrap();
        assert_eq!(mode(&f), 0o600);
        let g = dir.join("db");
        std::fs::write(&g, b"").unwrap();
        std::fs::set_permissions(&g, std::fs::Permissions::from_mode(0o644)).unwrap();
        ensure_file(&g).unwrap();
        assert_eq!(mode(&g), 0o600);
        let h = dir.join("new");
        ensure_file(&h).unwrap();
        assert_eq!(mode(&h), 0o600);
    }
}
