//! A FUSE file system in the style of LazyFS: it passes everything through to a backing
//! directory except file data, which it keeps in memory until the file is fsynced, as a
//! kernel's page cache does. `LazyFs::lose_unsynced` then plays a power cut: every write not
//! yet fsynced is gone. A node is killed first, its un-fsynced writes dropped, then it is
//! restarted on what a disk would really hold.
//!
//! Names (create, unlink, rename, mkdir) reach the backing directory at once: only file
//! contents and sizes (writes and truncates) wait for fsync. Reads see the pending state, and
//! every open asks the kernel not to cache pages (direct I/O), so what a process reads after a
//! loss is what the backing directory holds. Served by one thread in the harness process.

use anyhow::{Context, Result};
use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the mounts are called in /proc/mounts.
const FS_NAME: &str = "basalt-lazyfs";

/// Unmounts the lazy file systems whose process is gone (their mount point answers "not
/// connected"); no other mount is touched.
fn sweep() {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    for line in mounts.lines() {
        let mut fields = line.split(' ');
        let (Some(name), Some(point)) = (fields.next(), fields.next()) else {
            continue;
        };
        if name != FS_NAME {
            continue;
        }
        // /proc/mounts escapes spaces and the like as octal.
        let point = point.replace("\\040", " ");
        let dead =
            std::fs::metadata(&point).is_err_and(|e| e.raw_os_error() == Some(libc::ENOTCONN));
        if dead {
            if let Ok(c) = std::ffi::CString::new(point) {
                // SAFETY: a valid C string; MNT_DETACH never blocks.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

/// Attributes and names are never cached by the kernel: sizes change when writes are lost.
const TTL: Duration = Duration::ZERO;
const ROOT: u64 = 1;

/// A change to a file's contents not yet fsynced.
#[derive(Clone, Debug)]
enum Pending {
    Write { at: u64, data: Vec<u8> },
    Truncate { len: u64 },
}

#[derive(Default)]
struct State {
    /// Inode → path under the backing root (the root is "").
    paths: HashMap<u64, PathBuf>,
    inodes: HashMap<PathBuf, u64>,
    next: u64,
    /// Inode → its un-fsynced changes, in order.
    pending: HashMap<u64, Vec<Pending>>,
    /// Open backing files by inode (read and written in place at fsync), while the kernel
    /// holds the inode open.
    files: HashMap<u64, File>,
    /// Opens of each inode not yet released. An unlinked (or renamed-over) inode that is
    /// still open lives on without a name, as POSIX keeps it, until its last release.
    opens: HashMap<u64, u32>,
    /// Writes dropped by `lose_unsynced`, for the report.
    lost_bytes: u64,
}

/// A mounted lazy file system; unmounted when dropped.
pub struct LazyFs {
    state: Arc<Mutex<State>>,
    _session: fuser::BackgroundSession,
    pub mountpoint: PathBuf,
}

impl LazyFs {
    /// Serves `backing` at `mountpoint` (both made if missing).
    pub fn mount(backing: &Path, mountpoint: &Path) -> Result<LazyFs> {
        // A dead run's mount at this point would fail the mkdir below.
        sweep();
        std::fs::create_dir_all(backing)?;
        std::fs::create_dir_all(mountpoint)?;
        let mut state = State {
            next: ROOT + 1,
            ..State::default()
        };
        state.paths.insert(ROOT, PathBuf::new());
        state.inodes.insert(PathBuf::new(), ROOT);
        let state = Arc::new(Mutex::new(state));
        let fs = Lazy {
            root: backing.canonicalize()?,
            state: state.clone(),
        };
        // Unmounted when the session is dropped (fusermount's auto-unmount left mounts behind
        // here); a run that died is swept up by the next one.
        let options = [MountOption::FSName(FS_NAME.into()), MountOption::RW];
        let session = fuser::spawn_mount2(fs, mountpoint, &options)
            .with_context(|| format!("mount lazyfs at {}", mountpoint.display()))?;
        Ok(LazyFs {
            state,
            _session: session,
            mountpoint: mountpoint.to_path_buf(),
        })
    }

    /// Drops every change not yet fsynced (call it with the node stopped); answers how many
    /// bytes of writes were lost.
    pub fn lose_unsynced(&self) -> u64 {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let lost = s.pending_bytes();
        s.pending.clear();
        s.files.clear();
        s.lost_bytes += lost;
        lost
    }

    /// Bytes of writes dropped by `lose_unsynced` so far.
    pub fn lost_bytes(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .lost_bytes
    }

    /// Bytes written but not yet fsynced, now.
    pub fn unsynced_bytes(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pending_bytes()
    }
}

struct Lazy {
    root: PathBuf,
    state: Arc<Mutex<State>>,
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn time(secs: i64, nanos: i64) -> SystemTime {
    match secs >= 0 {
        true => UNIX_EPOCH + Duration::new(secs as u64, nanos as u32),
        false => UNIX_EPOCH,
    }
}

impl State {
    /// Bytes of the writes waiting for an fsync.
    fn pending_bytes(&self) -> u64 {
        let bytes = |p: &Pending| match p {
            Pending::Write { data, .. } => data.len() as u64,
            Pending::Truncate { .. } => 0,
        };
        self.pending.values().flatten().map(bytes).sum()
    }

    fn ino(&mut self, path: PathBuf) -> u64 {
        if let Some(i) = self.inodes.get(&path) {
            return *i;
        }
        let i = self.next;
        self.next += 1;
        self.paths.insert(i, path.clone());
        self.inodes.insert(path, i);
        i
    }

    /// The name is gone; the inode too unless it is still open.
    fn forget_path(&mut self, path: &Path) {
        if let Some(i) = self.inodes.remove(path) {
            self.paths.remove(&i);
            if self.opens.get(&i).copied().unwrap_or(0) == 0 {
                self.pending.remove(&i);
                self.files.remove(&i);
            }
        }
    }

    fn opened(&mut self, ino: u64) {
        *self.opens.entry(ino).or_default() += 1;
    }

    /// One open fewer: the last closes the backing file (pending data stays, by inode, while
    /// the inode has a name), and ends a nameless inode.
    fn released(&mut self, ino: u64) {
        let left = match self.opens.get_mut(&ino) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n
            }
            None => 0,
        };
        if left == 0 {
            self.opens.remove(&ino);
            self.files.remove(&ino);
            if !self.paths.contains_key(&ino) {
                self.pending.remove(&ino);
            }
        }
    }

    /// The file's size with its pending changes.
    fn size(&self, ino: u64, on_disk: u64) -> u64 {
        let mut size = on_disk;
        for p in self.pending.get(&ino).into_iter().flatten() {
            size = match p {
                Pending::Write { at, data } => size.max(at + data.len() as u64),
                Pending::Truncate { len } => *len,
            };
        }
        size
    }
}

impl Lazy {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn real(&self, s: &State, ino: u64) -> Option<PathBuf> {
        s.paths.get(&ino).map(|p| self.root.join(p))
    }

    fn child(&self, s: &State, parent: u64, name: &OsStr) -> Option<PathBuf> {
        s.paths.get(&parent).map(|p| p.join(name))
    }

    fn attr(&self, s: &State, ino: u64) -> std::io::Result<FileAttr> {
        let m = match (self.real(s, ino), s.files.get(&ino)) {
            (Some(real), _) => std::fs::symlink_metadata(real)?,
            // Unlinked but still open.
            (None, Some(f)) => f.metadata()?,
            (None, None) => return Err(std::io::Error::from_raw_os_error(libc::ENOENT)),
        };
        let kind = match m.file_type() {
            t if t.is_dir() => FileType::Directory,
            t if t.is_symlink() => FileType::Symlink,
            _ => FileType::RegularFile,
        };
        let size = match kind {
            FileType::RegularFile => s.size(ino, m.len()),
            _ => m.len(),
        };
        Ok(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: time(m.atime(), m.atime_nsec()),
            mtime: time(m.mtime(), m.mtime_nsec()),
            ctime: time(m.ctime(), m.ctime_nsec()),
            crtime: time(m.ctime(), m.ctime_nsec()),
            kind,
            perm: (m.mode() & 0o7777) as u16,
            nlink: m.nlink() as u32,
            uid: m.uid(),
            gid: m.gid(),
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    /// The backing file of `ino`, opened once for reading and writing.
    fn file<'a>(&self, s: &'a mut State, ino: u64) -> std::io::Result<&'a File> {
        if !s.files.contains_key(&ino) {
            // (Reopened by name: an inode without a name is kept open until released.)
            let real = self
                .real(s, ino)
                .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOENT))?;
            let f = OpenOptions::new().read(true).write(true).open(real)?;
            s.files.insert(ino, f);
        }
        Ok(&s.files[&ino])
    }

    /// Unlinks a file or removes a directory (`how`) at once, with what was pending for it.
    fn remove(
        &self,
        parent: u64,
        name: &OsStr,
        reply: ReplyEmpty,
        how: fn(&Path) -> std::io::Result<()>,
    ) {
        let mut s = self.state();
        let Some(path) = self.child(&s, parent, name) else {
            return reply.error(libc::ENOENT);
        };
        match how(&self.root.join(&path)) {
            Ok(()) => {
                s.forget_path(&path);
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Writes `ino`'s pending changes to the backing file and syncs it.
    fn sync(&self, s: &mut State, ino: u64) -> std::io::Result<()> {
        let pending = s.pending.remove(&ino).unwrap_or_default();
        let f = self.file(s, ino)?;
        for p in &pending {
            match p {
                Pending::Write { at, data } => f.write_all_at(data, *at)?,
                Pending::Truncate { len } => f.set_len(*len)?,
            }
        }
        f.sync_all()
    }

    /// `size` bytes of `ino` from `at`, as a reader sees them (pending changes included).
    fn read_at(&self, s: &mut State, ino: u64, at: u64, size: u64) -> std::io::Result<Vec<u8>> {
        let on_disk = self.file(s, ino)?.metadata()?.len();
        let end = (at + size).min(s.size(ino, on_disk));
        if end <= at {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; (end - at) as usize];
        let disk_end = end.min(on_disk);
        if disk_end > at {
            self.file(s, ino)?
                .read_exact_at(&mut buf[..(disk_end - at) as usize], at)?;
        }
        // Replay the pending changes over the range, in order. A truncate zeroes what lies
        // past it (a later extension reads zeros there).
        for p in s.pending.get(&ino).into_iter().flatten() {
            match p {
                Pending::Write { at: w, data } => {
                    let (ws, we) = (*w, *w + data.len() as u64);
                    let (from, to) = (ws.max(at), we.min(end));
                    if from < to {
                        buf[(from - at) as usize..(to - at) as usize]
                            .copy_from_slice(&data[(from - ws) as usize..(to - ws) as usize]);
                    }
                }
                Pending::Truncate { len } => {
                    if *len < end {
                        let from = (*len).max(at);
                        buf[(from - at) as usize..].fill(0);
                    }
                }
            }
        }
        Ok(buf)
    }
}

impl Filesystem for Lazy {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let mut s = self.state();
        let Some(path) = self.child(&s, parent, name) else {
            return reply.error(libc::ENOENT);
        };
        if let Err(e) = std::fs::symlink_metadata(self.root.join(&path)) {
            return reply.error(errno(&e));
        }
        let ino = s.ino(path);
        match self.attr(&s, ino) {
            Ok(a) => reply.entry(&TTL, &a, 0),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        let s = self.state();
        match self.attr(&s, ino) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let mut s = self.state();
        let Some(real) = self.real(&s, ino) else {
            return reply.error(libc::ENOENT);
        };
        if let Some(m) = mode {
            let p = std::fs::Permissions::from_mode(m & 0o7777);
            if let Err(e) = std::fs::set_permissions(&real, p) {
                return reply.error(errno(&e));
            }
        }
        if let Some(len) = size {
            // A size change is file data: it waits for fsync like a write.
            s.pending
                .entry(ino)
                .or_default()
                .push(Pending::Truncate { len });
        }
        match self.attr(&s, ino) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mkdir(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let mut s = self.state();
        let Some(path) = self.child(&s, parent, name) else {
            return reply.error(libc::ENOENT);
        };
        let real = self.root.join(&path);
        if let Err(e) = std::fs::create_dir(&real) {
            return reply.error(errno(&e));
        }
        let _ = std::fs::set_permissions(&real, std::fs::Permissions::from_mode(mode & 0o7777));
        let ino = s.ino(path);
        match self.attr(&s, ino) {
            Ok(a) => reply.entry(&TTL, &a, 0),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, reply, |p| std::fs::remove_file(p))
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, reply, |p| std::fs::remove_dir(p))
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        if flags != 0 {
            return reply.error(libc::EINVAL);
        }
        let mut s = self.state();
        let (Some(from), Some(to)) = (
            self.child(&s, parent, name),
            self.child(&s, newparent, newname),
        ) else {
            return reply.error(libc::ENOENT);
        };
        if from == to {
            return reply.ok();
        }
        if let Err(e) = std::fs::rename(self.root.join(&from), self.root.join(&to)) {
            return reply.error(errno(&e));
        }
        // The target's old inode is gone; the moved one (and anything under it) keeps its
        // inode and its pending changes under the new name.
        s.forget_path(&to);
        let moved: Vec<(PathBuf, u64)> = s
            .inodes
            .iter()
            .filter(|(p, _)| p.starts_with(&from))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        for (old, ino) in moved {
            // (Joining an empty rest would add a trailing slash.)
            let new = match old.strip_prefix(&from) {
                Ok(rest) if !rest.as_os_str().is_empty() => to.join(rest),
                _ => to.clone(),
            };
            s.inodes.remove(&old);
            s.inodes.insert(new.clone(), ino);
            s.paths.insert(ino, new);
        }
        reply.ok()
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        let mut s = self.state();
        match self.file(&mut s, ino) {
            Ok(_) => {
                s.opened(ino);
                reply.opened(0, fuser::consts::FOPEN_DIRECT_IO)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.state().released(ino);
        reply.ok()
    }

    fn link(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _newparent: u64,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        // Hard links do not fit a map of names; RocksDB copies instead when told so.
        reply.error(libc::EOPNOTSUPP)
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let mut s = self.state();
        match self.read_at(&mut s, ino, offset.max(0) as u64, size as u64) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let mut s = self.state();
        if !s.paths.contains_key(&ino) {
            return reply.error(libc::ENOENT);
        }
        let at = offset.max(0) as u64;
        let list = s.pending.entry(ino).or_default();
        // An append right after the last write extends it (logs are written that way).
        match list.last_mut() {
            Some(Pending::Write { at: w, data: d }) if *w + d.len() as u64 == at => {
                d.extend_from_slice(data)
            }
            _ => list.push(Pending::Write {
                at,
                data: data.to_vec(),
            }),
        }
        reply.written(data.len() as u32)
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lock: u64, reply: ReplyEmpty) {
        reply.ok()
    }

    fn fsync(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = self.state();
        match self.sync(&mut s, ino) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let mut s = self.state();
        let Some(dir) = s.paths.get(&ino).cloned() else {
            return reply.error(libc::ENOENT);
        };
        let read = match std::fs::read_dir(self.root.join(&dir)) {
            Ok(r) => r,
            Err(e) => return reply.error(errno(&e)),
        };
        let mut entries = vec![
            (ino, FileType::Directory, ".".into()),
            (ino, FileType::Directory, "..".into()),
        ];
        let mut names: Vec<(std::ffi::OsString, bool)> = read
            .filter_map(|e| e.ok())
            .map(|e| (e.file_name(), e.file_type().is_ok_and(|t| t.is_dir())))
            .collect();
        names.sort();
        for (name, is_dir) in names {
            let child = s.ino(dir.join(&name));
            let kind = match is_dir {
                true => FileType::Directory,
                false => FileType::RegularFile,
            };
            entries.push((child, kind, name));
        }
        for (i, (child, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(child, (i + 1) as i64, kind, name) {
                break;
            }
        }
        reply.ok()
    }

    fn fsyncdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let s = self.state();
        let Some(real) = self.real(&s, ino) else {
            return reply.error(libc::ENOENT);
        };
        match File::open(real).and_then(|d| d.sync_all()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        let Ok(path) = std::ffi::CString::new(self.root.as_os_str().as_encoded_bytes()) else {
            return reply.error(libc::EINVAL);
        };
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid C string and a zeroed out-parameter of the right type.
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
            return reply.error(libc::EIO);
        }
        reply.statfs(
            st.f_blocks,
            st.f_bfree,
            st.f_bavail,
            st.f_files,
            st.f_ffree,
            st.f_bsize as u32,
            st.f_namemax as u32,
            st.f_frsize as u32,
        )
    }

    fn access(&mut self, _req: &Request<'_>, _ino: u64, _mask: i32, reply: ReplyEmpty) {
        reply.ok()
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = self.state();
        let Some(path) = self.child(&s, parent, name) else {
            return reply.error(libc::ENOENT);
        };
        let real = self.root.join(&path);
        let exists = real.exists();
        if exists && flags & libc::O_EXCL != 0 {
            return reply.error(libc::EEXIST);
        }
        let created = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(mode & 0o7777)
            .open(&real);
        let f = match created {
            Ok(f) => f,
            Err(e) => return reply.error(errno(&e)),
        };
        // An existing file keeps its inode; truncating it is a change of its data, pending
        // until fsync like any other.
        let ino = s.ino(path);
        if exists && flags & libc::O_TRUNC != 0 {
            s.pending
                .entry(ino)
                .or_default()
                .push(Pending::Truncate { len: 0 });
        }
        s.files.entry(ino).or_insert(f);
        s.opened(ino);
        match self.attr(&s, ino) {
            Ok(a) => reply.created(&TTL, &a, 0, 0, fuser::consts::FOPEN_DIRECT_IO),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        _offset: i64,
        _length: i64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        // Space reserved without a size change (RocksDB's preallocation) is only a hint.
        match mode == libc::FALLOC_FL_KEEP_SIZE {
            true => reply.ok(),
            false => reply.error(libc::EOPNOTSUPP),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Mounting needs root and /dev/fuse; elsewhere the test says so and passes.
    fn mounted() -> Option<(tempfile::TempDir, LazyFs)> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || !Path::new("/dev/fuse").exists() {
            eprintln!("skipped: mounting a FUSE file system needs root and /dev/fuse");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let fs = LazyFs::mount(&dir.path().join("disk"), &dir.path().join("mnt")).unwrap();
        Some((dir, fs))
    }

    #[test]
    fn writes_wait_for_fsync_and_a_cut_loses_the_rest() {
        let Some((dir, fs)) = mounted() else { return };
        let (mnt, disk) = (dir.path().join("mnt"), dir.path().join("disk"));
        // Never synced: readable through the mount, not on the disk.
        std::fs::write(mnt.join("a"), b"hello").unwrap();
        assert_eq!(std::fs::read(mnt.join("a")).unwrap(), b"hello");
        assert_eq!(std::fs::read(disk.join("a")).unwrap(), b"");
        // Synced, then more appended and the file cut short, unsynced.
        let mut b = File::create(mnt.join("b")).unwrap();
        b.write_all(b"durable").unwrap();
        b.sync_all().unwrap();
        b.write_all(b" lost").unwrap();
        assert_eq!(std::fs::read(mnt.join("b")).unwrap(), b"durable lost");
        b.set_len(3).unwrap();
        b.write_all_at(b"!", 5).unwrap();
        assert_eq!(std::fs::read(mnt.join("b")).unwrap(), b"dur\0\0!");
        drop(b);
        // A directory and a rename reach the disk at once; the data follows its fsync.
        std::fs::create_dir(mnt.join("d")).unwrap();
        let mut c = File::create(mnt.join("d/c.tmp")).unwrap();
        c.write_all(b"renamed").unwrap();
        c.sync_all().unwrap();
        drop(c);
        std::fs::rename(mnt.join("d/c.tmp"), mnt.join("d/c")).unwrap();
        assert!(fs.unsynced_bytes() > 0);
        let lost = fs.lose_unsynced();
        assert_eq!(lost, 5 + 5 + 1);
        assert_eq!(std::fs::read(mnt.join("a")).unwrap(), b"");
        assert_eq!(std::fs::read(mnt.join("b")).unwrap(), b"durable");
        assert_eq!(std::fs::read(mnt.join("d/c")).unwrap(), b"renamed");
        assert!(!mnt.join("d/c.tmp").exists());
        let mut names: Vec<String> = std::fs::read_dir(&mnt)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "b", "d"]);
        std::fs::remove_file(mnt.join("a")).unwrap();
        assert!(!disk.join("a").exists());
        // An unlinked file lives on through a descriptor still open, as POSIX has it.
        let e = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(mnt.join("e"))
            .unwrap();
        e.write_all_at(b"kept", 0).unwrap();
        std::fs::remove_file(mnt.join("e")).unwrap();
        let mut buf = [0u8; 4];
        e.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"kept");
        e.sync_all().unwrap();
        drop(e);
        // Truncating an existing file on create waits for fsync like a write.
        File::create(mnt.join("b")).unwrap();
        assert_eq!(std::fs::read(mnt.join("b")).unwrap(), b"");
        fs.lose_unsynced();
        assert_eq!(std::fs::read(mnt.join("b")).unwrap(), b"durable");
        // Hard links are refused as unsupported (RocksDB then copies).
        let link = std::fs::hard_link(mnt.join("b"), mnt.join("b2")).unwrap_err();
        assert_eq!(link.raw_os_error(), Some(libc::EOPNOTSUPP));
    }
}
