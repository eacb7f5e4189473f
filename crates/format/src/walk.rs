//! The walk: the entries a backup records, in manifest order (format-v1.md §11.5: each
//! backed-up PATH in the order given, depth first, pre-order, the children of a
//! directory sorted by their raw name bytes).
//!
//! Two ways to get them: [`Walker::walk`] lstats everything below the PATHs;
//! [`Walker::walk_changed`] starts from the parent snapshot's entries and lstats only
//! the paths the caller says may have changed (and what they imply: their ancestors, the
//! children of a changed directory, new directories). Both give the same entries for
//! the same tree when the caller's list of changed paths is complete.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use crate::backup::{root_name, Progress};
use crate::exclude::Excludes;
use crate::manifest::{Entry, Kind, Manifest};
use crate::FormatError;

pub(crate) struct WalkEntry {
    pub fs_path: PathBuf,
    pub entry: Entry,
}

/// A backed-up PATH.
pub(crate) struct Root {
    /// As given (the walk reaches entries through it).
    pub path: PathBuf,
    /// Its name at the snapshot's root.
    pub name: Vec<u8>,
    /// The absolute form excludes are matched with (`exclude` module documentation).
    pub abs: PathBuf,
    /// Another absolute form naming the same entry (the canonical one), when it differs:
    /// changed paths are recognised under either.
    pub alt: Option<PathBuf>,
    /// What the manifest records as its source path (canonical, else as given).
    pub source: Vec<u8>,
}

/// The PATHs of a backup; refuses a missing one and two with the same root name.
pub(crate) fn roots(paths: &[PathBuf]) -> Result<Vec<Root>, FormatError> {
    let mut out = Vec::with_capacity(paths.len());
    let mut names: HashMap<Vec<u8>, PathBuf> = HashMap::new();
    for p in paths {
        fs::symlink_metadata(p).map_err(|e| FormatError::io(p, e))?;
        let name = root_name(p)?;
        if let Some(other) = names.insert(name.clone(), p.clone()) {
            return Err(FormatError::Invalid(format!(
                "{} and {} would both be named {:?} at the snapshot's root; back them up separately or from a common parent",
                other.display(),
                p.display(),
                String::from_utf8_lossy(&name)
            )));
        }
        // The canonical directory holding it, and its name (a PATH that is a symlink is
        // backed up as one, so its own name is not resolved).
        let canon = match (p.file_name(), p.components().next_back()) {
            (Some(n), Some(Component::Normal(_))) => {
                let parent = p
                    .parent()
                    .filter(|q| !q.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                fs::canonicalize(parent)
                    .map_err(|e| FormatError::io(parent, e))?
                    .join(n)
            }
            _ => fs::canonicalize(p).map_err(|e| FormatError::io(p, e))?,
        };
        let lexical = (p.is_absolute() && !p.components().any(|c| c == Component::ParentDir))
            .then(|| p.components().collect::<PathBuf>());
        let abs = lexical.unwrap_or_else(|| canon.clone());
        let alt = (canon != abs).then_some(canon);
        let source = fs::canonicalize(p)
            .unwrap_or_else(|_| p.clone())
            .as_os_str()
            .as_bytes()
            .to_vec();
        out.push(Root {
            path: p.clone(),
            name,
            abs,
            alt,
            source,
        });
    }
    Ok(out)
}

pub(crate) fn entry_from_meta(path: Vec<u8>, md: &fs::Metadata) -> Option<Entry> {
    let ft = md.file_type();
    let kind = if ft.is_file() {
        Kind::File
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else {
        return None;
    };
    Some(Entry {
        path,
        kind,
        mode: md.mode() & 0o7777,
        mtime: md.mtime(),
        mtime_ns: md.mtime_nsec() as u32,
        size: if kind == Kind::File { md.size() } else { 0 },
        chunks: Vec::new(),
        target: Vec::new(),
        ino: md.ino(),
        ctime: md.ctime(),
        ctime_ns: md.ctime_nsec() as u32,
    })
}

/// An entry's place in walk order: the PATH's index, then the path below it with `/` as
/// 0 (names hold no NUL, so 0 sorts a directory's subtree right after it and before its
/// later siblings: byte order of these keys is walk order).
type Key = (usize, Vec<u8>);

fn key_below(parent: &Key, name: &[u8]) -> Key {
    let mut rest = parent.1.clone();
    if !rest.is_empty() {
        rest.push(0);
    }
    rest.extend_from_slice(name);
    (parent.0, rest)
}

/// Whether `k` is `top` or below it.
fn within(top: &Key, k: &Key) -> bool {
    k.0 == top.0
        && (top.1.is_empty()
            || (k.1.starts_with(&top.1) && (k.1.len() == top.1.len() || k.1[top.1.len()] == 0)))
}

fn rest_path(rest: &[u8]) -> PathBuf {
    let b: Vec<u8> = rest
        .iter()
        .map(|&c| if c == 0 { b'/' } else { c })
        .collect();
    PathBuf::from(OsStr::from_bytes(&b))
}

/// Walks, counting what it does and reporting what it skips.
pub(crate) struct Walker<'a> {
    pub progress: &'a dyn Progress,
    pub exclude: &'a Excludes,
    /// Warnings about entries left out (recorded with the snapshot).
    pub skipped: Vec<String>,
    /// Entries left out by an exclude pattern (not counting what is below them).
    pub excluded: u64,
    /// lstat calls made.
    pub stat_calls: u64,
}

impl<'a> Walker<'a> {
    pub fn new(progress: &'a dyn Progress, exclude: &'a Excludes) -> Self {
        Walker {
            progress,
            exclude,
            skipped: Vec::new(),
            excluded: 0,
            stat_calls: 0,
        }
    }

    fn warn(&mut self, msg: String) {
        self.progress.warn(&msg);
        self.skipped.push(msg);
    }

    fn lstat(&mut self, p: &Path) -> io::Result<fs::Metadata> {
        self.stat_calls += 1;
        fs::symlink_metadata(p)
    }

    /// The entry for `p`, or `None` (with a warning) for what a snapshot cannot hold.
    fn entry_for(&mut self, rel: Vec<u8>, p: &Path, md: &fs::Metadata) -> Option<Entry> {
        let Some(mut e) = entry_from_meta(rel, md) else {
            self.warn(format!(
                "{}: not a regular file, directory or symlink; skipped",
                p.display()
            ));
            return None;
        };
        if e.kind == Kind::Symlink {
            match fs::read_link(p) {
                Ok(t) => e.target = t.as_os_str().as_bytes().to_vec(),
                Err(err) => {
                    self.warn(format!("{}: cannot read link: {err}; skipped", p.display()));
                    return None;
                }
            }
        }
        Some(e)
    }

    /// The names in directory `p`, sorted; `None` (with a warning) if it cannot be listed.
    fn list(&mut self, p: &Path) -> Option<Vec<Vec<u8>>> {
        match fs::read_dir(p) {
            Ok(rd) => {
                let mut kids = Vec::new();
                for d in rd {
                    match d {
                        Ok(d) => kids.push(d.file_name().as_bytes().to_vec()),
                        Err(err) => {
                            self.warn(format!("{}: {err}; some entries skipped", p.display()))
                        }
                    }
                }
                kids.sort();
                Some(kids)
            }
            Err(err) => {
                self.warn(format!(
                    "{}: cannot list directory: {err}; its contents are skipped",
                    p.display()
                ));
                None
            }
        }
    }

    /// lstats the child `name` of a directory and applies the excludes: its metadata, or
    /// `None` when it is excluded or cannot be read (with a warning).
    fn child(
        &mut self,
        p: &Path,
        abs: &Path,
        name: &[u8],
    ) -> Option<(PathBuf, PathBuf, fs::Metadata)> {
        let n = OsStr::from_bytes(name);
        let (kp, kabs) = (p.join(n), abs.join(n));
        match self.lstat(&kp) {
            Ok(md) => {
                if self.exclude.is_excluded(&kabs, md.is_dir()) {
                    self.excluded += 1;
                    return None;
                }
                Some((kp, kabs, md))
            }
            Err(err) => {
                self.warn(format!("{}: {err}; skipped", kp.display()));
                None
            }
        }
    }

    /// The entry at `p` (already lstat'ed) and everything below it, in walk order.
    fn subtree(
        &mut self,
        rel: Vec<u8>,
        p: PathBuf,
        abs: PathBuf,
        md: fs::Metadata,
        out: &mut Vec<WalkEntry>,
    ) {
        // Depth-first, children sorted by name, with an explicit stack.
        let mut stack = vec![(rel, p, abs, md)];
        while let Some((rel, p, abs, md)) = stack.pop() {
            let Some(e) = self.entry_for(rel, &p, &md) else {
                continue;
            };
            if e.kind == Kind::Dir {
                if let Some(names) = self.list(&p) {
                    for n in names.into_iter().rev() {
                        if let Some((kp, kabs, kmd)) = self.child(&p, &abs, &n) {
                            let mut r = e.path.clone();
                            r.push(b'/');
                            r.extend_from_slice(&n);
                            stack.push((r, kp, kabs, kmd));
                        }
                    }
                }
            }
            out.push(WalkEntry {
                fs_path: p,
                entry: e,
            });
        }
    }

    /// Everything below the PATHs, from the disk.
    pub fn walk(&mut self, roots: &[Root]) -> Result<Vec<WalkEntry>, FormatError> {
        let mut out = Vec::new();
        for root in roots {
            let md = self
                .lstat(&root.path)
                .map_err(|e| FormatError::io(&root.path, e))?;
            self.subtree(
                root.name.clone(),
                root.path.clone(),
                root.abs.clone(),
                md,
                &mut out,
            );
        }
        Ok(out)
    }

    /// The entries of `parent` (a snapshot of the same PATHs), with the `changed` paths
    /// looked at again: each changed path below a PATH and every directory above it up to
    /// the PATH are lstat'ed; a changed directory is listed again (children gone are
    /// dropped with what was below them, new ones are lstat'ed); a directory that was not
    /// one in the parent is walked whole; a path that is gone is dropped with what was
    /// below it. The excludes apply to the parent's entries too. Everything else is the
    /// parent's as it was.
    ///
    /// `Ok(Err(reason))`: the parent cannot be used this way (nothing was lstat'ed yet);
    /// the caller walks everything.
    pub fn walk_changed(
        &mut self,
        roots: &[Root],
        parent: &Manifest,
        changed: &[PathBuf],
    ) -> Result<Result<Vec<WalkEntry>, String>, FormatError> {
        let mut want: Vec<&[u8]> = roots.iter().map(|r| r.source.as_slice()).collect();
        let mut had: Vec<&[u8]> = parent.source_paths.iter().map(|p| p.as_slice()).collect();
        want.sort();
        had.sort();
        if want != had {
            return Ok(Err("the parent snapshot backed up other paths".into()));
        }
        let index: HashMap<&[u8], usize> = roots
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.as_slice(), i))
            .collect();

        // The changed paths as keys (ancestors sort before what is below them).
        let cwd = std::env::current_dir().ok();
        let mut targets: Vec<Key> = Vec::new();
        for c in changed {
            let c = if c.is_absolute() {
                c.clone()
            } else {
                match &cwd {
                    Some(d) => d.join(c),
                    None => return Ok(Err(format!("{}: not an absolute path", c.display()))),
                }
            };
            for (i, r) in roots.iter().enumerate() {
                for prefix in std::iter::once(&r.abs).chain(r.alt.as_ref()) {
                    let Ok(below) = c.strip_prefix(prefix) else {
                        continue;
                    };
                    let mut rest = Vec::new();
                    for comp in below.components() {
                        match comp {
                            Component::Normal(n) => {
                                if !rest.is_empty() {
                                    rest.push(0);
                                }
                                rest.extend_from_slice(n.as_bytes());
                            }
                            Component::CurDir => {}
                            _ => {
                                return Ok(Err(format!(
                                    "changed path {} has a `..` component",
                                    c.display()
                                )))
                            }
                        }
                    }
                    targets.push((i, rest));
                }
            }
        }
        targets.sort();
        targets.dedup();

        // The parent's entries in walk order, without what the excludes now leave out.
        let mut map: BTreeMap<Key, Entry> = BTreeMap::new();
        for e in &parent.entries {
            let (top, rest) = match e.path.iter().position(|&b| b == b'/') {
                Some(j) => (&e.path[..j], &e.path[j + 1..]),
                None => (e.path.as_slice(), &[][..]),
            };
            let Some(&i) = index.get(top) else {
                return Ok(Err(format!(
                    "the parent snapshot holds {:?}, not below any PATH",
                    String::from_utf8_lossy(top)
                )));
            };
            let mut e = e.clone();
            e.chunks = Vec::new();
            let k = (
                i,
                rest.iter()
                    .map(|&b| if b == b'/' { 0 } else { b })
                    .collect(),
            );
            map.insert(k, e);
        }
        if !self.exclude.is_empty() {
            let mut cut: Option<Key> = None;
            let mut gone = Vec::new();
            for (k, e) in &map {
                if cut.as_ref().is_some_and(|c| within(c, k)) {
                    gone.push(k.clone());
                } else if !k.1.is_empty()
                    && self
                        .exclude
                        .is_excluded(&roots[k.0].abs.join(rest_path(&k.1)), e.kind == Kind::Dir)
                {
                    self.excluded += 1;
                    gone.push(k.clone());
                    cut = Some(k.clone());
                }
            }
            for k in gone {
                map.remove(&k);
            }
        }

        // Whether the walk goes on below an entry looked at again: no when it is gone,
        // not a directory, or was just walked whole.
        let mut seen: HashMap<Key, bool> = HashMap::new();
        'targets: for t in &targets {
            let root = &roots[t.0];
            let comps: Vec<&[u8]> = if t.1.is_empty() {
                Vec::new()
            } else {
                t.1.split(|&b| b == 0).collect()
            };
            // From the PATH down to the target.
            let mut k: Key = (t.0, Vec::new());
            for d in 0..=comps.len() {
                if d > 0 {
                    k = key_below(&k, comps[d - 1]);
                }
                let (descend, mode_changed) = match seen.get(&k) {
                    Some(&b) => (b, false),
                    None => {
                        let r = match self.restat(root, &k, &mut map)? {
                            Restat::Dir { mode_changed } => (true, mode_changed),
                            _ => (false, false),
                        };
                        seen.insert(k.clone(), r.0);
                        r
                    }
                };
                if !descend {
                    continue 'targets;
                }
                if d == comps.len() {
                    for c in self.relist(root, &k, &mut map, mode_changed)? {
                        seen.insert(c, false);
                    }
                }
            }
        }

        Ok(Ok(map
            .into_iter()
            .map(|((i, rest), entry)| WalkEntry {
                fs_path: if rest.is_empty() {
                    roots[i].path.clone()
                } else {
                    roots[i].path.join(rest_path(&rest))
                },
                entry,
            })
            .collect()))
    }

    /// lstats the entry at `k` again and updates the map.
    fn restat(
        &mut self,
        root: &Root,
        k: &Key,
        map: &mut BTreeMap<Key, Entry>,
    ) -> Result<Restat, FormatError> {
        let (p, abs, rel) = if k.1.is_empty() {
            (root.path.clone(), root.abs.clone(), root.name.clone())
        } else {
            let rp = rest_path(&k.1);
            let mut rel = root.name.clone();
            rel.push(b'/');
            rel.extend(k.1.iter().map(|&b| if b == 0 { b'/' } else { b }));
            (root.path.join(&rp), root.abs.join(&rp), rel)
        };
        let md = match self.lstat(&p) {
            Ok(md) => md,
            Err(e) if k.1.is_empty() => return Err(FormatError::io(&p, e)),
            Err(e) => {
                // Gone (or a directory above it is no longer one): dropped as the walk
                // would not meet it; anything else is what the walk says of an entry it
                // cannot lstat.
                if !matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) {
                    self.warn(format!("{}: {e}; skipped", p.display()));
                }
                remove_within(map, k, true);
                return Ok(Restat::Gone);
            }
        };
        if !k.1.is_empty() && self.exclude.is_excluded(&abs, md.is_dir()) {
            self.excluded += 1;
            remove_within(map, k, true);
            return Ok(Restat::Gone);
        }
        // A directory that was not one in the parent, or another directory under the same
        // name (removed and made again: what is inside it was never reported), is walked
        // whole.
        let old_mode = map
            .get(k)
            .filter(|e| e.kind == Kind::Dir && e.ino == md.ino())
            .map(|e| e.mode);
        let was_dir = old_mode.is_some();
        if md.is_dir() && !was_dir {
            remove_within(map, k, true);
            let mut out = Vec::new();
            self.subtree(rel, p, abs, md, &mut out);
            for w in out {
                let below = &w.entry.path[root.name.len()..];
                let rest = below
                    .iter()
                    .skip(1)
                    .map(|&b| if b == b'/' { 0 } else { b })
                    .collect();
                map.insert((k.0, rest), w.entry);
            }
            return Ok(Restat::Whole);
        }
        let Some(e) = self.entry_for(rel, &p, &md) else {
            remove_within(map, k, true);
            return Ok(Restat::Gone);
        };
        if e.kind != Kind::Dir {
            remove_within(map, k, false);
            map.insert(k.clone(), e);
            return Ok(Restat::NotDir);
        }
        let mode_changed = old_mode != Some(e.mode);
        map.insert(k.clone(), e);
        Ok(Restat::Dir { mode_changed })
    }

    /// Lists the directory at `k` again: children gone are dropped, new ones added (and
    /// walked whole; their keys are returned). When the directory's permissions changed
    /// (`mode_changed`), the children it had are lstat'ed again too (whether they can be
    /// reached depends on them).
    fn relist(
        &mut self,
        root: &Root,
        k: &Key,
        map: &mut BTreeMap<Key, Entry>,
        mode_changed: bool,
    ) -> Result<Vec<Key>, FormatError> {
        let rp = rest_path(&k.1);
        let (p, abs) = if k.1.is_empty() {
            (root.path.clone(), root.abs.clone())
        } else {
            (root.path.join(&rp), root.abs.join(&rp))
        };
        let Some(names) = self.list(&p) else {
            remove_within(map, k, false);
            return Ok(Vec::new());
        };
        // The children the map holds.
        let start = if k.1.is_empty() {
            Vec::new()
        } else {
            let mut s = k.1.clone();
            s.push(0);
            s
        };
        let old: HashSet<Vec<u8>> = map
            .range((k.0, start.clone())..)
            .take_while(|(c, _)| c.0 == k.0 && c.1.starts_with(&start))
            .filter(|(c, _)| !c.1.is_empty() && !c.1[start.len()..].contains(&0))
            .map(|(c, _)| c.1[start.len()..].to_vec())
            .collect();
        let now: HashSet<&[u8]> = names.iter().map(|n| n.as_slice()).collect();
        for n in &old {
            if !now.contains(n.as_slice()) {
                remove_within(map, &key_below(k, n), true);
            }
        }
        let rel = map.get(k).map(|e| e.path.clone()).unwrap_or_default();
        let mut new = Vec::new();
        for n in &names {
            if old.contains(n) {
                if mode_changed {
                    self.restat(root, &key_below(k, n), map)?;
                }
                continue;
            }
            let Some((kp, kabs, md)) = self.child(&p, &abs, n) else {
                continue;
            };
            let mut r = rel.clone();
            r.push(b'/');
            r.extend_from_slice(n);
            let mut out = Vec::new();
            self.subtree(r, kp, kabs, md, &mut out);
            let ck = key_below(k, n);
            for w in out {
                let extra = &w.entry.path[rel.len() + 1 + n.len()..];
                let mut rest = ck.1.clone();
                rest.extend(extra.iter().map(|&b| if b == b'/' { 0 } else { b }));
                map.insert((k.0, rest), w.entry);
            }
            new.push(ck);
        }
        Ok(new)
    }
}

enum Restat {
    /// Gone, excluded or not something a snapshot holds: dropped with its subtree.
    Gone,
    /// A file or symlink now.
    NotDir,
    /// A directory, as in the parent; whether its permissions changed.
    Dir { mode_changed: bool },
    /// A directory that was not one in the parent: walked whole.
    Whole,
}

/// Removes what is below `k` (and `k` itself if `itself`).
fn remove_within(map: &mut BTreeMap<Key, Entry>, k: &Key, itself: bool) {
    let gone: Vec<Key> = map
        .range(k.clone()..)
        .take_while(|(c, _)| within(k, c))
        .map(|(c, _)| c.clone())
        .filter(|c| itself || c != k)
        .collect();
    for c in gone {
        map.remove(&c);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::backup::NoProgress;
    use crate::MANIFEST_FORMAT;

    /// Names whose byte order differs from the order of paths joined with `/`.
    const NAMES: &[&str] = &["a", "a.b", "a-", "ab", "b", "x", "f.tmp", "z"];

    fn parent_of(roots: &[Root], entries: &[WalkEntry]) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            time: 0,
            time_ns: 0,
            machine_name: String::new(),
            machine_key: String::new(),
            source_paths: roots.iter().map(|r| r.source.clone()).collect(),
            parents: Vec::new(),
            snapshots: Vec::new(),
            chunk_key: [0; 32],
            packs: Vec::new(),
            chunks: Vec::new(),
            entries: entries.iter().map(|w| w.entry.clone()).collect(),
        }
    }

    fn full(roots: &[Root], ex: &Excludes) -> (Vec<WalkEntry>, u64) {
        let mut w = Walker::new(&NoProgress, ex);
        let v = w.walk(roots).unwrap();
        (v, w.stat_calls)
    }

    fn changed(
        roots: &[Root],
        ex: &Excludes,
        parent: &Manifest,
        paths: &[PathBuf],
    ) -> (Vec<WalkEntry>, u64) {
        let mut w = Walker::new(&NoProgress, ex);
        let v = w.walk_changed(roots, parent, paths).unwrap().unwrap();
        (v, w.stat_calls)
    }

    fn same(a: &[WalkEntry], b: &[WalkEntry]) -> Result<(), String> {
        let pa: Vec<_> = a.iter().map(|w| (&w.entry, &w.fs_path)).collect();
        let pb: Vec<_> = b.iter().map(|w| (&w.entry, &w.fs_path)).collect();
        if pa == pb {
            return Ok(());
        }
        let names = |v: &[WalkEntry]| {
            v.iter()
                .map(|w| String::from_utf8_lossy(&w.entry.path).into_owned())
                .collect::<Vec<_>>()
        };
        Err(format!("full {:?}\npartial {:?}", names(a), names(b)))
    }

    /// Every directory below `dir` (and it), every file or symlink.
    fn listing(dir: &Path, dirs: &mut Vec<PathBuf>, others: &mut Vec<PathBuf>) {
        dirs.push(dir.to_path_buf());
        let mut kids: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|d| d.unwrap().path())
            .collect();
        kids.sort();
        for k in kids {
            let md = fs::symlink_metadata(&k).unwrap();
            if md.is_dir() {
                listing(&k, dirs, others);
            } else {
                others.push(k);
            }
        }
    }

    fn pick<'a, T>(rng: &mut StdRng, v: &'a [T]) -> &'a T {
        &v[rng.gen_range(0..v.len())]
    }

    fn fill(rng: &mut StdRng, dir: &Path, depth: u32) {
        for _ in 0..rng.gen_range(0..5) {
            let n = *pick(rng, NAMES);
            let p = dir.join(n);
            if p.exists() || fs::symlink_metadata(&p).is_ok() {
                continue;
            }
            match rng.gen_range(0..10) {
                0..=2 if depth < 3 => {
                    fs::create_dir(&p).unwrap();
                    fill(rng, &p, depth + 1);
                }
                3 => std::os::unix::fs::symlink(format!("t{}", rng.gen::<u8>()), &p).unwrap(),
                _ => fs::write(&p, rng.gen::<[u8; 4]>()).unwrap(),
            }
        }
    }

    /// One random change; returns the paths an inotify watcher would report.
    fn edit(rng: &mut StdRng, root: &Path) -> Vec<PathBuf> {
        let (mut dirs, mut others) = (Vec::new(), Vec::new());
        listing(root, &mut dirs, &mut others);
        let below: Vec<PathBuf> = dirs[1..].to_vec();
        match rng.gen_range(0..8) {
            0 if !others.is_empty() => {
                let f = pick(rng, &others).clone();
                if fs::symlink_metadata(&f).unwrap().is_file() {
                    fs::write(&f, rng.gen::<[u8; 7]>()).unwrap();
                } else {
                    fs::remove_file(&f).unwrap();
                    std::os::unix::fs::symlink("elsewhere", &f).unwrap();
                }
                vec![f]
            }
            1 if !others.is_empty() => {
                let f = pick(rng, &others).clone();
                fs::remove_file(&f).unwrap();
                vec![f]
            }
            2 if !below.is_empty() => {
                let d = pick(rng, &below).clone();
                fs::remove_dir_all(&d).unwrap();
                vec![d]
            }
            3 => {
                let d = pick(rng, &dirs).clone();
                let p = d.join(pick(rng, NAMES));
                if fs::symlink_metadata(&p).is_ok() {
                    return Vec::new();
                }
                if rng.gen() {
                    fs::create_dir(&p).unwrap();
                    fill(rng, &p, 2);
                } else {
                    fs::write(&p, b"new").unwrap();
                }
                // Sometimes only the directory is reported (IN_CREATE names the child,
                // but a watcher may also merge events into their directory).
                if rng.gen_range(0..3) == 0 {
                    vec![d]
                } else {
                    vec![p]
                }
            }
            4 if !others.is_empty() || !below.is_empty() => {
                // A rename, maybe into another directory, maybe over an existing file.
                let from = if rng.gen() && !below.is_empty() {
                    pick(rng, &below).clone()
                } else if !others.is_empty() {
                    pick(rng, &others).clone()
                } else {
                    return Vec::new();
                };
                let d = pick(rng, &dirs).clone();
                let to = d.join(pick(rng, NAMES));
                if to.starts_with(&from) || fs::symlink_metadata(&to).is_ok() {
                    return Vec::new();
                }
                fs::rename(&from, &to).unwrap();
                vec![from, to]
            }
            5 => {
                let d = pick(rng, &dirs).clone();
                let mode = if rng.gen() { 0o700 } else { 0o755 };
                fs::set_permissions(&d, fs::Permissions::from_mode(mode)).unwrap();
                vec![d]
            }
            6 if !others.is_empty() => {
                // A file becomes a directory.
                let f = pick(rng, &others).clone();
                fs::remove_file(&f).unwrap();
                fs::create_dir(&f).unwrap();
                fill(rng, &f, 2);
                vec![f]
            }
            _ => Vec::new(),
        }
    }

    #[test]
    fn partial_walk_equals_full_walk_after_random_edits() {
        // WALK_SEEDS=n runs more.
        let seeds = std::env::var("WALK_SEEDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60u64);
        for seed in 0..seeds {
            let mut rng = StdRng::seed_from_u64(seed);
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().join("r");
            fs::create_dir(&root).unwrap();
            fill(&mut rng, &root, 0);
            let ex = if seed % 2 == 0 {
                Excludes::none()
            } else {
                Excludes::new(&["*.tmp".to_string(), "x/".to_string()]).unwrap()
            };
            let roots = super::roots(std::slice::from_ref(&root)).unwrap();
            let (before, _) = full(&roots, &ex);
            let parent = parent_of(&roots, &before);
            let mut paths = Vec::new();
            for _ in 0..rng.gen_range(1..6) {
                paths.extend(edit(&mut rng, &root));
            }
            let (after, _) = full(&roots, &ex);
            let (partial, _) = changed(&roots, &ex, &parent, &paths);
            if let Err(e) = same(&after, &partial) {
                panic!("seed {seed}, changed {paths:?}:\n{e}");
            }
        }
    }

    #[test]
    fn partial_walk_stats_only_what_changed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("r");
        for d in 0..20 {
            let dir = root.join(format!("d{d:02}"));
            fs::create_dir_all(&dir).unwrap();
            for f in 0..50 {
                fs::write(dir.join(format!("f{f:02}")), [f as u8]).unwrap();
            }
        }
        let ex = Excludes::none();
        let roots = super::roots(std::slice::from_ref(&root)).unwrap();
        let (before, stats) = full(&roots, &ex);
        assert_eq!(stats, 1 + 20 + 20 * 50);
        let parent = parent_of(&roots, &before);
        fs::write(root.join("d03/f07"), b"changed").unwrap();
        fs::write(root.join("d05/new"), b"new").unwrap();
        fs::remove_file(root.join("d09/f00")).unwrap();
        let paths = [
            root.join("d03/f07"),
            root.join("d05/new"),
            root.join("d09/f00"),
        ];
        let (partial, stats) = changed(&roots, &ex, &parent, &paths);
        // The root, three directories, three paths.
        assert_eq!(stats, 7);
        same(&full(&roots, &ex).0, &partial).unwrap();
        // Nothing changed: nothing lstat'ed, the parent's entries.
        let (again, stats) = changed(&roots, &ex, &parent_of(&roots, &partial), &[]);
        assert_eq!(stats, 0);
        same(&partial, &again).unwrap();
        // Paths outside the PATHs are ignored.
        let (_, stats) = changed(&roots, &ex, &parent, &[tmp.path().join("elsewhere")]);
        assert_eq!(stats, 0);
    }

    #[test]
    fn partial_walk_applies_new_excludes_to_the_parent() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("r");
        fs::create_dir_all(root.join("a/.cache/deep")).unwrap();
        fs::write(root.join("a/.cache/deep/f"), b"x").unwrap();
        fs::write(root.join("a/keep"), b"x").unwrap();
        let roots = super::roots(std::slice::from_ref(&root)).unwrap();
        let (before, _) = full(&roots, &Excludes::none());
        let parent = parent_of(&roots, &before);
        let ex = Excludes::new(&[".cache".to_string()]).unwrap();
        let mut w = Walker::new(&NoProgress, &ex);
        let partial = w.walk_changed(&roots, &parent, &[]).unwrap().unwrap();
        assert_eq!(w.excluded, 1);
        same(&full(&roots, &ex).0, &partial).unwrap();
    }

    #[test]
    fn partial_walk_refuses_other_paths_and_dotdot() {
        let tmp = tempfile::tempdir().unwrap();
        let (r1, r2) = (tmp.path().join("r"), tmp.path().join("s"));
        fs::create_dir(&r1).unwrap();
        fs::create_dir(&r2).unwrap();
        let ex = Excludes::none();
        let roots1 = super::roots(std::slice::from_ref(&r1)).unwrap();
        let roots2 = super::roots(std::slice::from_ref(&r2)).unwrap();
        let parent = parent_of(&roots1, &full(&roots1, &ex).0);
        let mut w = Walker::new(&NoProgress, &ex);
        assert!(w.walk_changed(&roots2, &parent, &[]).unwrap().is_err());
        let dotdot = [r1.join("a/../b")];
        assert!(w.walk_changed(&roots1, &parent, &dotdot).unwrap().is_err());
        assert_eq!(w.stat_calls, 0);
    }

    #[test]
    fn partial_walk_skips_what_cannot_be_read_as_the_full_walk_does() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("r");
        fs::create_dir_all(root.join("d")).unwrap();
        fs::write(root.join("d/f"), b"x").unwrap();
        let roots = super::roots(std::slice::from_ref(&root)).unwrap();
        let ex = Excludes::none();
        let parent = parent_of(&roots, &full(&roots, &ex).0);
        // A FIFO where a file was: not something a snapshot holds.
        fs::remove_file(root.join("d/f")).unwrap();
        let st = std::process::Command::new("mkfifo")
            .arg(root.join("d/f"))
            .status()
            .unwrap();
        assert!(st.success());
        let mut w = Walker::new(&NoProgress, &ex);
        let partial = w
            .walk_changed(&roots, &parent, &[root.join("d/f")])
            .unwrap()
            .unwrap();
        let mut fw = Walker::new(&NoProgress, &ex);
        let all = fw.walk(&roots).unwrap();
        same(&all, &partial).unwrap();
        assert_eq!(w.skipped.len(), 1);
        assert_eq!(fw.skipped.len(), 1);
        // A directory that can no longer be searched (not for root, whom nothing stops).
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            return;
        }
        fs::remove_file(root.join("d/f")).unwrap();
        fs::write(root.join("d/g"), b"x").unwrap();
        let parent = parent_of(&roots, &full(&roots, &ex).0);
        fs::set_permissions(root.join("d"), fs::Permissions::from_mode(0o600)).unwrap();
        let mut w = Walker::new(&NoProgress, &ex);
        let partial = w
            .walk_changed(&roots, &parent, &[root.join("d")])
            .unwrap()
            .unwrap();
        let mut fw = Walker::new(&NoProgress, &ex);
        let all = fw.walk(&roots).unwrap();
        fs::set_permissions(root.join("d"), fs::Permissions::from_mode(0o700)).unwrap();
        same(&all, &partial).unwrap();
        assert_eq!(w.skipped, fw.skipped);
    }
}
