//! An account's data directory (`accounts/NAME/`: a Matrix account's session and matrix-sdk's
//! SQLite stores, a media link key) moving with the account's lease in cluster mode: its owner
//! copies it into the database as it changes and once more when it gives the account back, each
//! copy sealed with the outbox key and fenced by the lease; the next owner puts the copy in
//! place before the account starts (docs/storage.md says why not shared storage).
//!
//! A copy is one archive of the directory's files: SQLite databases read through SQLite itself
//! (`VACUUM INTO`, a consistent snapshot while matrix-sdk writes them), their `-wal`, `-shm` and
//! `-journal` files and matrix-sdk's caches (event cache, media) left out, other files read as
//! they are. Sizes, counts and names are bounded
//! both ways: a copy too big is not made (logged), an archive that breaks a bound is refused
//! whole and the directory left as it was.

use sha2::{Digest, Sha256};
use std::path::{Component, Path, PathBuf};

/// The largest copy kept of one account's directory.
pub const MAX_BYTES: usize = 64 << 20;
/// The most files a copy holds.
const MAX_FILES: usize = 4_096;
/// The longest relative path in a copy.
const MAX_PATH: usize = 1_024;
/// What an archive starts with (its format's version).
const MAGIC: &[u8; 8] = b"PSLDIR1\n";
/// Caches matrix-sdk fills again by itself (room timelines, downloaded media): left out of
/// copies, which they could swell past [`MAX_BYTES`].
const CACHES: &[&str] = &["matrix-sdk-event-cache.sqlite3", "matrix-sdk-media.sqlite3"];
/// The first bytes of every SQLite database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Why a copy could not be made or put in place.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("reading a SQLite store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the directory holds more than {MAX_BYTES} bytes or {MAX_FILES} files; not copied")]
    TooBig,
    #[error("the archive is malformed: {0}")]
    Malformed(&'static str),
}

/// An archive of a directory's files, and its digest (SHA-256).
pub type Packed = (Vec<u8>, [u8; 32]);

/// One archive of the files under `dir` (none: an empty directory, or none at all), and its
/// digest. Blocking: run it off the async threads.
pub fn pack(dir: &Path) -> Result<Option<Packed>, FilesError> {
    let mut files = Vec::new();
    if dir.is_dir() {
        collect(dir, Path::new(""), &mut files, 0)?;
    }
    if files.is_empty() {
        return Ok(None);
    }
    files.sort();
    let mut out = MAGIC.to_vec();
    let scratch = beside(dir, "snapshot");
    for rel in files {
        let path = dir.join(&rel);
        let bytes = if is_sqlite(&path)? {
            snapshot_sqlite(&path, &scratch)?
        } else {
            std::fs::read(&path)?
        };
        let name = rel.to_string_lossy().replace('\\', "/");
        if out.len() + name.len() + bytes.len() + 10 > MAX_BYTES {
            return Err(FilesError::TooBig);
        }
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        out.extend_from_slice(&bytes);
    }
    let digest: [u8; 32] = Sha256::digest(&out).into();
    Ok(Some((out, digest)))
}

/// Replaces the files under `dir` with those of `archive`, made by [`pack`]: unpacked beside it
/// first (each file owner-readable only), then swapped in, so a malformed archive changes
/// nothing. Blocking.
pub fn unpack(archive: &[u8], dir: &Path) -> Result<usize, FilesError> {
    let files = parse(archive)?;
    let staging = beside(dir, "restoring");
    let old = beside(dir, "replaced");
    let _ = std::fs::remove_dir_all(&staging);
    let _ = std::fs::remove_dir_all(&old);
    for (rel, bytes) in &files {
        let path = staging.join(rel);
        if let Some(parent) = path.parent() {
            create_private_dir(parent)?;
        }
        write_private(&path, bytes)?;
    }
    create_private_dir(&staging)?;
    if dir.exists() {
        std::fs::rename(dir, &old)?;
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::rename(&staging, dir)?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(files.len())
}

/// A hidden working path beside `dir`, of this process: `.NAME.WHAT-PID`.
fn beside(dir: &Path, what: &str) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    dir.with_file_name(format!(".{name}.{what}-{}", std::process::id()))
}

/// The files of an archive, every bound checked before anything is written.
fn parse(archive: &[u8]) -> Result<Vec<(PathBuf, &[u8])>, FilesError> {
    if archive.len() > MAX_BYTES {
        return Err(FilesError::TooBig);
    }
    let mut rest = archive
        .strip_prefix(MAGIC.as_slice())
        .ok_or(FilesError::Malformed("not an account directory archive"))?;
    let mut files = Vec::new();
    while !rest.is_empty() {
        if files.len() == MAX_FILES {
            return Err(FilesError::TooBig);
        }
        let (len, after) = take(rest, 2)?;
        let name_len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if name_len == 0 || name_len > MAX_PATH {
            return Err(FilesError::Malformed("a file name is empty or too long"));
        }
        let (name, after) = take(after, name_len)?;
        let (len, after) = take(after, 8)?;
        let mut size = [0u8; 8];
        size.copy_from_slice(len);
        let size = usize::try_from(u64::from_be_bytes(size))
            .map_err(|_| FilesError::Malformed("a file's size is out of range"))?;
        let (bytes, after) = take(after, size)?;
        let name =
            std::str::from_utf8(name).map_err(|_| FilesError::Malformed("a name is not UTF-8"))?;
        files.push((safe_relative(name)?, bytes));
        rest = after;
    }
    Ok(files)
}

fn take(bytes: &[u8], n: usize) -> Result<(&[u8], &[u8]), FilesError> {
    if bytes.len() < n {
        return Err(FilesError::Malformed("it ends inside a file"));
    }
    Ok(bytes.split_at(n))
}

/// `name` as a path below the directory: plain components only (no `..`, no root, no prefix).
fn safe_relative(name: &str) -> Result<PathBuf, FilesError> {
    let path = PathBuf::from(name);
    if name.contains('\0') || !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(FilesError::Malformed("a file name leaves the directory"));
    }
    Ok(path)
}

fn collect(
    root: &Path,
    rel: &Path,
    out: &mut Vec<PathBuf>,
    depth: usize,
) -> Result<(), FilesError> {
    if depth > 8 {
        return Err(FilesError::TooBig);
    }
    for entry in std::fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let name = entry.file_name();
        let child = rel.join(&name);
        if kind.is_dir() {
            collect(root, &child, out, depth + 1)?;
        } else if kind.is_file() {
            let n = name.to_string_lossy();
            if ["-wal", "-shm", "-journal"].iter().any(|s| n.ends_with(s))
                || CACHES.iter().any(|c| n.starts_with(c))
            {
                continue;
            }
            if out.len() == MAX_FILES || child.as_os_str().len() > MAX_PATH {
                return Err(FilesError::TooBig);
            }
            out.push(child);
        }
        // Symbolic links and other kinds are not followed nor copied.
    }
    Ok(())
}

fn is_sqlite(path: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut head = [0u8; 16];
    let mut f = std::fs::File::open(path)?;
    Ok(f.read(&mut head)? == 16 && &head == SQLITE_HEADER)
}

/// A consistent copy of the SQLite database at `path`, read while others may write it.
fn snapshot_sqlite(path: &Path, scratch: &Path) -> Result<Vec<u8>, FilesError> {
    create_private_dir(scratch)?;
    let copy = scratch.join("copy.sqlite3");
    let _ = std::fs::remove_file(&copy);
    let result = (|| {
        let db = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        db.busy_timeout(std::time::Duration::from_secs(10))?;
        db.execute("VACUUM INTO ?1", [copy.to_string_lossy().as_ref()])?;
        drop(db);
        Ok::<_, FilesError>(std::fs::read(&copy)?)
    })();
    let _ = std::fs::remove_dir_all(scratch);
    result
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_with_a_live_sqlite_store_comes_back_whole_elsewhere() {
        let here = tempfile::tempdir().unwrap();
        let dir = here.path().join("accounts").join("matrix.main");
        std::fs::create_dir_all(dir.join("store")).unwrap();
        std::fs::write(dir.join("session.json"), br#"{"device_id":"ABC"}"#).unwrap();
        // A store another connection holds open in WAL mode, its last write still in the WAL.
        let db = rusqlite::Connection::open(dir.join("store/crypto.sqlite3")).unwrap();
        db.pragma_update(None, "journal_mode", "WAL").unwrap();
        db.execute("CREATE TABLE k (v TEXT)", []).unwrap();
        db.execute("INSERT INTO k VALUES ('olm session')", [])
            .unwrap();
        assert!(dir.join("store/crypto.sqlite3-wal").exists());
        std::fs::write(dir.join("store/matrix-sdk-media.sqlite3"), b"a cache").unwrap();
        let (archive, digest) = pack(&dir).unwrap().unwrap();
        assert_eq!(
            pack(&dir).unwrap().unwrap().1,
            digest,
            "the same files, the same digest"
        );

        let there = tempfile::tempdir().unwrap();
        let target = there.path().join("accounts").join("matrix.main");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(target.join("stale"), b"from an earlier owner").unwrap();
        assert_eq!(unpack(&archive, &target).unwrap(), 2);
        assert!(!target.join("stale").exists(), "the directory is replaced");
        assert!(
            !target.join("store/matrix-sdk-media.sqlite3").exists(),
            "caches stay behind"
        );
        assert_eq!(
            std::fs::read(target.join("session.json")).unwrap(),
            br#"{"device_id":"ABC"}"#
        );
        let copy = rusqlite::Connection::open(target.join("store/crypto.sqlite3")).unwrap();
        let v: String = copy.query_row("SELECT v FROM k", [], |r| r.get(0)).unwrap();
        assert_eq!(v, "olm session");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(target.join("session.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "owner-readable only");
    }

    #[test]
    fn an_empty_or_missing_directory_makes_no_copy() {
        let here = tempfile::tempdir().unwrap();
        assert!(pack(&here.path().join("none")).unwrap().is_none());
        assert!(pack(here.path()).unwrap().is_none());
    }

    #[test]
    fn hostile_archives_are_refused_and_change_nothing() {
        let here = tempfile::tempdir().unwrap();
        let target = here.path().join("acct");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(target.join("keep"), b"x").unwrap();
        let entry = |name: &str, size: u64, body: &[u8]| {
            let mut a = MAGIC.to_vec();
            a.extend_from_slice(&(name.len() as u16).to_be_bytes());
            a.extend_from_slice(name.as_bytes());
            a.extend_from_slice(&size.to_be_bytes());
            a.extend_from_slice(body);
            a
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("no magic", b"PK\x03\x04".to_vec()),
            ("parent", entry("../escape", 1, b"x")),
            ("absolute", entry("/etc/passwd", 1, b"x")),
            ("nested parent", entry("a/../../b", 1, b"x")),
            ("short body", entry("f", 100, b"x")),
            ("huge size", entry("f", u64::MAX, b"x")),
            ("empty name", entry("", 1, b"x")),
            (
                "cut in a header",
                MAGIC.iter().copied().chain([0u8]).collect(),
            ),
        ];
        for (what, archive) in cases {
            assert!(
                matches!(unpack(&archive, &target), Err(FilesError::Malformed(_))),
                "{what}: refused as malformed"
            );
            assert_eq!(std::fs::read(target.join("keep")).unwrap(), b"x", "{what}");
        }
        assert!(!here.path().join("escape").exists());
    }
}
