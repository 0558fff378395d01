//! Backups of the embedded database: every tree written to one file while
//! writes wait (a point-in-time copy), and restored into an empty directory.
//!
//! The file (integers big-endian): the magic line, the layout version as a
//! length-prefixed string, then one frame per entry — tag 1, tree name, key
//! and value, each length-prefixed (u32) — and the end frame: tag 0, the
//! entry count (u64) and the SHA-256 of every byte before the end frame. A
//! file that is cut short, altered or from another layout is refused before
//! anything is written.

use std::{
    fs::File,
    io::{BufReader, BufWriter, Read, Write},
    path::{Path, PathBuf},
    time::Instant,
};

use sha2::{Digest as _, Sha256};

use crate::media::{
    ports::RepoError,
    records::{BackupReport, RestoreReport},
};

const MAGIC: &[u8] = b"MXMEDIA-SLED-BACKUP\n";
const ENTRY: u8 = 1;
const END: u8 = 0;
/// Longer names, keys or values than any record has: the file is damaged.
const MAX_FIELD: u32 = 64 << 20;

/// Writes every tree of `db` to `out` (which must not exist yet), through a
/// temporary name and with an fsync, so `out` is whole or absent.
/// The caller holds writes off for the duration.
pub fn write(db: &sled::Db, layout: &str, out: &Path) -> Result<BackupReport, RepoError> {
    let started = Instant::now();
    let partial = partial_path(out);
    if out.exists() {
        return Err(invalid(format!("{} exists already", out.display())));
    }
    let file = File::create(&partial).map_err(RepoError::backend)?;
    let mut sink = Hashed::new(BufWriter::with_capacity(1 << 20, file));
    let mut report = BackupReport::default();
    let written: Result<(), RepoError> = (|| {
        sink.put(MAGIC)?;
        sink.field(layout.as_bytes())?;
        for name in db.tree_names() {
            let tree = db.open_tree(&name)?;
            report.trees += 1;
            for entry in &tree {
                let (key, value) = entry?;
                sink.put(&[ENTRY])?;
                sink.field(&name)?;
                sink.field(&key)?;
                sink.field(&value)?;
                report.entries += 1;
            }
        }
        let digest = sink.hasher.clone().finalize();
        sink.put(&[END])?;
        sink.put(&report.entries.to_be_bytes())?;
        sink.put(&digest)?;
        Ok(())
    })();
    let finished = written.and_then(|()| {
        report.bytes = sink.count;
        let file = sink
            .inner
            .into_inner()
            .map_err(|e| RepoError::backend(e.into_error()))?;
        file.sync_all().map_err(RepoError::backend)?;
        std::fs::rename(&partial, out).map_err(RepoError::backend)?;
        sync_parent(out)
    });
    if let Err(error) = finished {
        let _ = std::fs::remove_file(&partial);
        return Err(error);
    }
    report.writes_paused_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}

/// Restores `backup` into `dir`, which must hold no database. The file is
/// checked whole first; the trees are written under a temporary name and
/// moved into place once flushed, so a cut-off restore leaves no database.
pub fn restore(backup: &Path, dir: &Path, layout: &str) -> Result<RestoreReport, RepoError> {
    let target = dir.join(layout);
    if target.exists()
        && std::fs::read_dir(&target)
            .map_err(RepoError::backend)?
            .next()
            .is_some()
    {
        return Err(invalid(format!(
            "{} holds a database already: restore goes into an empty data directory (move the old one away first)",
            target.display()
        )));
    }
    let entries = check(backup, layout)?;
    let staging = dir.join(format!("{layout}.restoring"));
    if staging.exists() {
        // Left by a restore that was cut off: it never became the database.
        std::fs::remove_dir_all(&staging).map_err(RepoError::backend)?;
    }
    let db = sled::Config::new().path(&staging).open()?;
    let mut source = Source::open(backup)?;
    source.header(layout)?;
    let mut report = RestoreReport::default();
    let mut tree: Option<(Vec<u8>, sled::Tree)> = None;
    while let Some((name, key, value)) = source.entry()? {
        let reuse = tree.as_ref().is_some_and(|(current, _)| *current == name);
        if !reuse {
            tree = Some((name.clone(), db.open_tree(&name)?));
        }
        if let Some((_, t)) = &tree {
            t.insert(key, value)?;
        }
        report.entries += 1;
    }
    db.flush()?;
    drop(tree);
    drop(db);
    if report.entries != entries {
        return Err(invalid(
            "the backup changed while it was restored".to_owned(),
        ));
    }
    if target.exists() {
        std::fs::remove_dir(&target).map_err(RepoError::backend)?;
    }
    std::fs::rename(&staging, &target).map_err(RepoError::backend)?;
    sync_parent(&target)?;
    Ok(report)
}

/// Reads `backup` through once: well formed, this layout, checksum right.
/// The number of entries it holds.
fn check(backup: &Path, layout: &str) -> Result<u64, RepoError> {
    let mut source = Source::open(backup)?;
    source.header(layout)?;
    let mut entries = 0u64;
    while source.entry()?.is_some() {
        entries += 1;
    }
    let digest = source.hasher.clone().finalize();
    let mut count = [0u8; 8];
    let mut stored = [0u8; 32];
    source.raw(&mut count)?;
    source.raw(&mut stored)?;
    if u64::from_be_bytes(count) != entries || stored[..] != digest[..] {
        return Err(invalid(
            "the backup is damaged (its checksum does not match)".to_owned(),
        ));
    }
    let mut extra = [0u8; 1];
    if source.inner.read(&mut extra).map_err(RepoError::backend)? != 0 {
        return Err(invalid("the backup has bytes after its end".to_owned()));
    }
    Ok(entries)
}

fn invalid(message: String) -> RepoError {
    RepoError::backend(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        message,
    ))
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

fn sync_parent(path: &Path) -> Result<(), RepoError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(RepoError::backend)
}

/// A writer that counts and hashes what passes through.
struct Hashed<W: Write> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Hashed<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), RepoError> {
        self.inner.write_all(bytes).map_err(RepoError::backend)?;
        self.hasher.update(bytes);
        self.count += bytes.len() as u64;
        Ok(())
    }

    fn field(&mut self, bytes: &[u8]) -> Result<(), RepoError> {
        let len = u32::try_from(bytes.len())
            .ok()
            .filter(|&n| n <= MAX_FIELD)
            .ok_or_else(|| invalid("a record is too large to back up".to_owned()))?;
        self.put(&len.to_be_bytes())?;
        self.put(bytes)
    }
}

/// The reading side: frames, hashed as they are read (the end frame is not).
struct Source {
    inner: BufReader<File>,
    hasher: Sha256,
}

type Entry = (Vec<u8>, Vec<u8>, Vec<u8>);

impl Source {
    fn open(path: &Path) -> Result<Self, RepoError> {
        let file = File::open(path)
            .map_err(|e| invalid(format!("cannot open the backup {}: {e}", path.display())))?;
        Ok(Self {
            inner: BufReader::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
        })
    }

    fn raw(&mut self, buf: &mut [u8]) -> Result<(), RepoError> {
        self.inner.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => invalid("the backup is cut short".to_owned()),
            _ => RepoError::backend(e),
        })
    }

    fn hashed(&mut self, buf: &mut [u8]) -> Result<(), RepoError> {
        self.raw(buf)?;
        self.hasher.update(&*buf);
        Ok(())
    }

    fn field(&mut self) -> Result<Vec<u8>, RepoError> {
        let mut len = [0u8; 4];
        self.hashed(&mut len)?;
        let len = u32::from_be_bytes(len);
        if len > MAX_FIELD {
            return Err(invalid(
                "the backup is damaged (a field is too long)".to_owned(),
            ));
        }
        let mut buf = vec![0u8; len as usize];
        self.hashed(&mut buf)?;
        Ok(buf)
    }

    fn header(&mut self, layout: &str) -> Result<(), RepoError> {
        let mut magic = [0u8; MAGIC.len()];
        self.hashed(&mut magic)?;
        if magic != MAGIC {
            return Err(invalid("not an mxmedia backup".to_owned()));
        }
        let found = self.field()?;
        if found != layout.as_bytes() {
            return Err(invalid(format!(
                "the backup holds database layout {}, this version reads {layout}",
                String::from_utf8_lossy(&found)
            )));
        }
        Ok(())
    }

    /// The next entry, or `None` at the end frame (not hashed).
    fn entry(&mut self) -> Result<Option<Entry>, RepoError> {
        let mut tag = [0u8; 1];
        self.raw(&mut tag)?;
        match tag[0] {
            END => Ok(None),
            ENTRY => {
                self.hasher.update(tag);
                Ok(Some((self.field()?, self.field()?, self.field()?)))
            }
            _ => Err(invalid("the backup is damaged (unknown frame)".to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) -> sled::Db {
        let db = sled::Config::new().path(dir.join("v1")).open().unwrap();
        db.insert(b"default-key", b"d".to_vec()).unwrap();
        let tree = db.open_tree("media_by_id").unwrap();
        for i in 0u32..100 {
            tree.insert(i.to_be_bytes(), vec![7u8; i as usize]).unwrap();
        }
        db.open_tree("meta_by_name")
            .unwrap()
            .insert(b"identity", b"x".to_vec())
            .unwrap();
        db
    }

    #[test]
    fn a_backup_restores_every_tree_byte_for_byte() {
        let tmp = tempfile::tempdir().unwrap();
        let db = sample(&tmp.path().join("a"));
        let out = tmp.path().join("backup.bin");
        let report = write(&db, "v1", &out).unwrap();
        assert_eq!(report.entries, 102);
        assert!(
            write(&db, "v1", &out).is_err(),
            "an existing file is never overwritten"
        );
        let restored = restore(&out, &tmp.path().join("b"), "v1").unwrap();
        assert_eq!(restored.entries, 102);
        let copy = sled::Config::new()
            .path(tmp.path().join("b/v1"))
            .open()
            .unwrap();
        for name in db.tree_names() {
            let (a, b) = (db.open_tree(&name).unwrap(), copy.open_tree(&name).unwrap());
            let left: Vec<_> = a.iter().map(Result::unwrap).collect();
            let right: Vec<_> = b.iter().map(Result::unwrap).collect();
            assert_eq!(left, right);
        }
        drop(copy);
        let again = restore(&out, &tmp.path().join("b"), "v1").unwrap_err();
        assert!(
            again.to_string().contains("holds a database already"),
            "{again}"
        );
    }

    #[test]
    fn damaged_backups_are_refused_before_anything_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let db = sample(&tmp.path().join("a"));
        let out = tmp.path().join("backup.bin");
        write(&db, "v1", &out).unwrap();
        let good = std::fs::read(&out).unwrap();
        let mut flipped = good.clone();
        flipped[good.len() / 2] ^= 1;
        let cases: [(&str, Vec<u8>); 4] = [
            ("flipped", flipped),
            ("cut", good[..good.len() - 10].to_vec()),
            ("extra", [good.clone(), vec![0]].concat()),
            ("empty", Vec::new()),
        ];
        for (name, bytes) in cases {
            let file = tmp.path().join(name);
            std::fs::write(&file, bytes).unwrap();
            let target = tmp.path().join(format!("into-{name}"));
            assert!(restore(&file, &target, "v1").is_err(), "{name}");
            assert!(!target.join("v1").exists(), "{name}: nothing written");
        }
        assert!(
            restore(&out, &tmp.path().join("other"), "v2").is_err(),
            "another layout"
        );
    }
}
