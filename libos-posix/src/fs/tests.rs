use super::*;
use crate::mock::MockConsole;
use alloc::string::String;
use alloc::vec;
use proptest::prelude::*;
use std::collections::BTreeMap as Map;

fn archive() -> Vec<u8> {
    tar::build(&[
        (b"./bin/", b'5', 0o755, b"", b""),
        (b"./bin/busybox", b'0', 0o755, b"", b"BUSYBOX"),
        (b"./bin/sh", b'2', 0o777, b"busybox", b""),
        (b"./bin/ls", b'1', 0o755, b"bin/busybox", b""),
        (b"./etc/motd", b'0', 0o644, b"", b"hello\n"),
        (b"./etc/loop", b'2', 0o777, b"loop", b""),
        (b"./lib", b'2', 0o777, b"/etc", b""),
        (b"./dev/null", b'3', 0o666, b"", b""),
    ])
}

fn fs(a: &[u8]) -> Fs<'_> {
    Fs::from_initrd(a, MockConsole::default().boxed()).unwrap()
}

fn read_all(fs: &mut Fs<'_>, ino: Ino) -> Vec<u8> {
    let mut b = vec![0; 4096];
    let n = fs.read_at(ino, 0, &mut b).unwrap();
    b.truncate(n);
    b
}

#[test]
fn tree_from_archive_zero_copy_and_links() {
    let a = archive();
    let mut f = fs(&a);
    let r = f.root();
    let bb = f.lookup(r, b"/bin/busybox", true).unwrap();
    assert!(f.is_zero_copy(bb));
    assert_eq!(read_all(&mut f, bb), b"BUSYBOX");
    // Symlink and hard link both reach busybox.
    assert_eq!(f.lookup(r, b"/bin/sh", true), Ok(bb));
    assert_eq!(f.lookup(r, b"bin/ls", true), Ok(bb));
    assert_eq!(f.stat(bb).unwrap().nlink, 2);
    let sh = f.lookup(r, b"/bin/sh", false).unwrap();
    assert_eq!(f.stat(sh).unwrap().mode & S_IFMT, S_IFLNK);
    assert_eq!(f.readlink(r, b"/bin/sh"), Ok(b"busybox".to_vec()));
    assert_eq!(f.readlink(r, b"/bin/busybox"), Err(EINVAL));
    // Symlink loop, symlinked directory.
    assert_eq!(f.lookup(r, b"/etc/loop", true), Err(ELOOP));
    assert!(f.lookup(r, b"/etc/loop", false).is_ok());
    let motd = f.lookup(r, b"/lib/motd", true).unwrap();
    assert_eq!(read_all(&mut f, motd), b"hello\n");
    assert_eq!(
        f.lookup(r, b"/lib/../bin/busybox", true),
        Ok(bb),
        ".. after a symlink is the target's parent"
    );
    // Devices and /tmp added; the archive's device entry skipped.
    let null = f.lookup(r, b"/dev/null", true).unwrap();
    assert_eq!(f.device(null), Some(Device::Null));
    assert_eq!(f.stat(null).unwrap().rdev, makedev(1, 3));
    assert_eq!(f.stat(f.lookup(r, b"/tmp", true).unwrap()).unwrap().mode, S_IFDIR | 0o1777);
    assert_eq!(f.stat(motd).unwrap().mtime.sec, 1_700_000_000);
}

#[test]
fn lookup_errors() {
    let a = archive();
    let f = fs(&a);
    let r = f.root();
    assert_eq!(f.lookup(r, b"", true), Err(ENOENT));
    assert_eq!(f.lookup(r, b"/nope", true), Err(ENOENT));
    assert_eq!(f.lookup(r, b"/etc/motd/x", true), Err(ENOTDIR));
    assert_eq!(f.lookup(r, b"/etc/motd/", true), Err(ENOTDIR));
    assert_eq!(f.lookup(r, b"/..", true), Ok(r));
    assert!(f.lookup(r, b"/lib/", false).is_ok(), "a trailing slash follows");
}

#[test]
fn copy_up_on_write() {
    let a = archive();
    let orig = a.clone();
    let mut f = fs(&a);
    let r = f.root();
    let motd = f.open(r, b"/etc/motd", O_WRONLY, 0).unwrap();
    assert!(f.is_zero_copy(motd));
    f.write_at(motd, 0, b"J").unwrap();
    assert!(!f.is_zero_copy(motd));
    assert_eq!(read_all(&mut f, motd), b"Jello\n");
    assert_eq!(a, orig, "the archive is untouched");
    f.write_at(motd, 10, b"!").unwrap();
    assert_eq!(read_all(&mut f, motd), b"Jello\n\0\0\0\0!");
}

#[test]
fn open_semantics() {
    let a = archive();
    let mut f = fs(&a);
    let r = f.root();
    assert_eq!(f.open(r, b"/tmp/x", O_RDONLY, 0), Err(ENOENT));
    let x = f.open(r, b"/tmp/x", O_CREAT | O_WRONLY, 0o666).unwrap();
    assert_eq!(f.stat(x).unwrap().mode, S_IFREG | 0o644);
    assert_eq!(f.open(r, b"/tmp/x", O_CREAT | O_EXCL | O_WRONLY, 0o666), Err(EEXIST));
    f.write_at(x, 0, b"abc").unwrap();
    assert_eq!(f.open(r, b"/tmp/x", O_RDONLY | O_TRUNC, 0), Ok(x));
    assert_eq!(f.size(x), 0);
    assert_eq!(f.open(r, b"/tmp", O_WRONLY, 0), Err(EISDIR));
    assert_eq!(f.open(r, b"/tmp", O_RDWR, 0), Err(EISDIR));
    assert!(f.open(r, b"/tmp", O_RDONLY | O_DIRECTORY, 0).is_ok());
    assert_eq!(f.open(r, b"/tmp/x", O_RDONLY | O_DIRECTORY, 0), Err(ENOTDIR));
    assert_eq!(f.open(r, b"/tmp/", O_CREAT | O_WRONLY, 0), Err(EISDIR));
    assert_eq!(f.open(r, b"/tmp/new/", O_CREAT | O_WRONLY, 0), Err(EISDIR));
    assert_eq!(f.open(r, b"/nodir/x", O_CREAT | O_WRONLY, 0), Err(ENOENT));
    assert_eq!(f.open(r, b"/etc/motd/x", O_CREAT | O_WRONLY, 0), Err(ENOTDIR));
    assert_eq!(f.open(r, b"/bin/sh", O_RDONLY | O_NOFOLLOW, 0), Err(ELOOP));
    // Creating through a dangling symlink creates its target.
    f.symlink(b"/tmp/target", r, b"/tmp/dangling").unwrap();
    let t = f.open(r, b"/tmp/dangling", O_CREAT | O_WRONLY, 0o600).unwrap();
    assert_eq!(f.lookup(r, b"/tmp/target", true), Ok(t));
    assert_eq!(
        f.open(r, b"/tmp/dangling2", O_CREAT | O_EXCL | O_WRONLY, 0o600).map(|_| ()),
        Ok(())
    );
}

#[test]
fn dirs_and_names() {
    let a = archive();
    let mut f = fs(&a);
    let r = f.root();
    let d = f.mkdir(r, b"/tmp/d", 0o777).unwrap();
    assert_eq!(f.stat(d).unwrap().mode, S_IFDIR | 0o755);
    assert_eq!(f.mkdir(r, b"/tmp/d", 0o777), Err(EEXIST));
    assert_eq!(f.mkdir(r, b"/tmp/d/", 0o777), Err(EEXIST));
    assert_eq!(f.mkdir(r, b"/", 0o777), Err(EEXIST));
    assert!(f.mkdir(d, b"sub/", 0o777).is_ok(), "trailing slash allowed");
    assert_eq!(f.stat(d).unwrap().nlink, 3);
    assert_eq!(f.rmdir(r, b"/tmp/d"), Err(ENOTEMPTY));
    assert_eq!(f.rmdir(d, b"."), Err(EINVAL));
    assert_eq!(f.rmdir(d, b".."), Err(ENOTEMPTY));
    assert_eq!(f.rmdir(r, b"/"), Err(EBUSY));
    assert_eq!(f.rmdir(r, b"/etc/motd"), Err(ENOTDIR));
    assert_eq!(f.unlink(r, b"/tmp/d"), Err(EISDIR));
    assert_eq!(f.unlink(r, b"/tmp/zz"), Err(ENOENT));
    assert_eq!(f.path_of(f.lookup(r, b"/tmp/d/sub", true).unwrap()), Ok(b"/tmp/d/sub".to_vec()));
    f.rmdir(d, b"sub").unwrap();
    // Renames.
    f.open(r, b"/tmp/f", O_CREAT | O_WRONLY, 0o644).unwrap();
    assert_eq!(f.rename(r, b"/tmp/f", r, b"/tmp/d"), Err(EISDIR));
    assert_eq!(f.rename(r, b"/tmp/d", r, b"/tmp/f"), Err(ENOTDIR));
    assert_eq!(f.rename(r, b"/tmp/d", r, b"/tmp/d/x"), Err(EINVAL));
    assert_eq!(f.rename(r, b"/tmp", r, b"/etc"), Err(ENOTEMPTY));
    assert_eq!(f.rename(r, b"/tmp/f", r, b"/tmp/f"), Ok(()));
    assert_eq!(f.rename(r, b"/tmp/f/", r, b"/tmp/g"), Err(ENOTDIR));
    f.rename(r, b"/tmp/d", r, b"/d2").unwrap();
    assert_eq!(f.path_of(d), Ok(b"/d2".to_vec()));
    f.rename(r, b"/tmp/f", r, b"/etc/motd").unwrap();
    assert_eq!(f.size(f.lookup(r, b"/etc/motd", true).unwrap()), 0);
    // Rename a hard link onto its twin: no-op, both names stay.
    f.rename(r, b"/bin/ls", r, b"/bin/busybox").unwrap();
    assert!(f.lookup(r, b"/bin/ls", true).is_ok());
    // A removed cwd has no path.
    f.hold(d);
    f.rmdir(r, b"/d2").unwrap();
    assert_eq!(f.path_of(d), Err(ENOENT));
    assert_eq!(f.lookup(d, b"x", true), Err(ENOENT));
    assert_eq!(f.open(d, b"x", O_CREAT | O_WRONLY, 0), Err(ENOENT));
    f.release(d);
}

#[test]
fn unlinked_open_file_lives_until_released() {
    let a = archive();
    let mut f = fs(&a);
    let r = f.root();
    let n0 = f.inode_count();
    let x = f.open(r, b"/tmp/x", O_CREAT | O_RDWR, 0o644).unwrap();
    f.hold(x);
    f.write_at(x, 0, b"data").unwrap();
    f.unlink(r, b"/tmp/x").unwrap();
    assert_eq!(read_all(&mut f, x), b"data");
    assert_eq!(f.stat(x).unwrap().nlink, 0);
    f.release(x);
    assert_eq!(f.inode_count(), n0);
}

#[test]
fn getdents_order() {
    let a = archive();
    let f = fs(&a);
    let r = f.root();
    let bin = f.lookup(r, b"/bin", true).unwrap();
    let names: Vec<(u8, String)> = (0..)
        .map_while(|i| f.dirent(bin, i).unwrap())
        .map(|(_, t, n)| (t, String::from_utf8_lossy(&n).into()))
        .collect();
    assert_eq!(
        names,
        [(DT_DIR, "."), (DT_DIR, ".."), (DT_REG, "busybox"), (DT_REG, "ls"), (DT_LNK, "sh")]
            .map(|(t, n)| (t, String::from(n)))
    );
    assert_eq!(f.dirent(f.lookup(r, b"/etc/motd", true).unwrap(), 0), Err(ENOTDIR));
}

#[test]
fn devices() {
    let con = MockConsole::default();
    con.input.borrow_mut().extend_from_slice(b"in");
    let mut f = Fs::new(con.boxed());
    let r = f.root();
    let z = f.lookup(r, b"/dev/zero", true).unwrap();
    let mut b = [9u8; 4];
    assert_eq!(f.read_at(z, 0, &mut b), Ok(4));
    assert_eq!(b, [0; 4]);
    let n = f.lookup(r, b"/dev/null", true).unwrap();
    assert_eq!(f.read_at(n, 0, &mut b), Ok(0));
    assert_eq!(f.write_at(n, 0, b"xyz"), Ok(3));
    let t = f.lookup(r, b"/dev/tty", true).unwrap();
    assert_eq!(f.write_at(t, 0, b"out"), Ok(3));
    assert_eq!(f.read_at(t, 0, &mut b), Ok(2));
    assert_eq!(con.output(), "out");
    assert_eq!(f.truncate(t, 0), Err(EINVAL));
}

#[test]
fn malformed_archives() {
    let mut a = archive();
    a[1025] ^= 1; // file data: not checked
    assert!(Fs::from_initrd(&a, MockConsole::default().boxed()).is_ok());
    let mut a = archive();
    a[5] ^= 1; // first header's name: checksum mismatch
    assert!(matches!(Fs::from_initrd(&a, MockConsole::default().boxed()), Err(BuildError::Tar(_))));
    let a = tar::build(&[(b"x", b'0', 0o644, b"", b"1"), (b"x/y", b'0', 0o644, b"", b"2")]);
    assert_eq!(
        Fs::from_initrd(&a, MockConsole::default().boxed()).unwrap_err(),
        BuildError::Entry(b"x/y".to_vec(), ENOTDIR)
    );
}

// ---- model-based property test of the writable layer over the archive ----

#[derive(Clone, Debug, PartialEq)]
enum M {
    Dir,
    File(Vec<u8>),
}

/// The model: a map from normalised absolute path to what is there.
struct Model(Map<Vec<u8>, M>);

impl Model {
    fn parent_of(p: &[u8]) -> Vec<u8> {
        let i = p.iter().rposition(|&c| c == b'/').unwrap();
        if i == 0 { b"/".to_vec() } else { p[..i].to_vec() }
    }
    fn check_parent(&self, p: &[u8]) -> SysResult<()> {
        match self.0.get(&Self::parent_of(p)) {
            Some(M::Dir) => Ok(()),
            Some(M::File(_)) => Err(ENOTDIR),
            None => {
                // ENOTDIR if some ancestor is a file, else ENOENT.
                let mut q = Self::parent_of(p);
                while q != b"/" {
                    if let Some(M::File(_)) = self.0.get(&q) {
                        return Err(ENOTDIR);
                    }
                    q = Self::parent_of(&q);
                }
                Err(ENOENT)
            }
        }
    }
    fn children(&self, p: &[u8]) -> usize {
        let mut pre = p.to_vec();
        pre.push(b'/');
        self.0.keys().filter(|k| k.starts_with(&pre)).count()
    }
    fn create(&mut self, p: &[u8]) -> SysResult<()> {
        self.check_parent(p)?;
        match self.0.get(p) {
            Some(M::Dir) => Err(EISDIR),
            Some(M::File(_)) => Ok(()),
            None => {
                self.0.insert(p.to_vec(), M::File(Vec::new()));
                Ok(())
            }
        }
    }
    fn write(&mut self, p: &[u8], off: usize, data: &[u8]) -> SysResult<()> {
        self.check_parent(p)?;
        match self.0.get_mut(p) {
            Some(M::File(v)) => {
                if !data.is_empty() {
                    if v.len() < off + data.len() {
                        v.resize(off + data.len(), 0);
                    }
                    v[off..off + data.len()].copy_from_slice(data);
                }
                Ok(())
            }
            Some(M::Dir) => Err(EISDIR),
            None => Err(ENOENT),
        }
    }
    fn mkdir(&mut self, p: &[u8]) -> SysResult<()> {
        self.check_parent(p)?;
        if self.0.contains_key(p) {
            return Err(EEXIST);
        }
        self.0.insert(p.to_vec(), M::Dir);
        Ok(())
    }
    fn rmdir(&mut self, p: &[u8]) -> SysResult<()> {
        self.check_parent(p)?;
        match self.0.get(p) {
            None => Err(ENOENT),
            Some(M::File(_)) => Err(ENOTDIR),
            Some(M::Dir) if self.children(p) > 0 => Err(ENOTEMPTY),
            Some(M::Dir) => {
                self.0.remove(p);
                Ok(())
            }
        }
    }
    fn unlink(&mut self, p: &[u8]) -> SysResult<()> {
        self.check_parent(p)?;
        match self.0.get(p) {
            None => Err(ENOENT),
            Some(M::Dir) => Err(EISDIR),
            Some(M::File(_)) => {
                self.0.remove(p);
                Ok(())
            }
        }
    }
    fn rename(&mut self, a: &[u8], b: &[u8]) -> SysResult<()> {
        self.check_parent(a)?;
        self.check_parent(b)?;
        let src = self.0.get(a).cloned().ok_or(ENOENT)?;
        if a == b {
            return Ok(());
        }
        let src_dir = src == M::Dir;
        if src_dir {
            let mut pre = a.to_vec();
            pre.push(b'/');
            if b.starts_with(&pre) {
                return Err(EINVAL);
            }
        }
        match (src_dir, self.0.get(b)) {
            (true, Some(M::File(_))) => return Err(ENOTDIR),
            (false, Some(M::Dir)) => return Err(EISDIR),
            (true, Some(M::Dir)) if self.children(b) > 0 => return Err(ENOTEMPTY),
            _ => {}
        }
        // Move the subtree.
        let mut pre = a.to_vec();
        pre.push(b'/');
        let moved: Vec<(Vec<u8>, M)> = self
            .0
            .iter()
            .filter(|(k, _)| k.starts_with(&pre))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, _) in &moved {
            self.0.remove(k);
        }
        self.0.remove(a);
        self.0.insert(b.to_vec(), src);
        for (k, v) in moved {
            let mut nk = b.to_vec();
            nk.extend_from_slice(&k[a.len()..]);
            self.0.insert(nk, v);
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
enum Op {
    Create(usize),
    Write(usize, usize, Vec<u8>),
    Trunc(usize, usize),
    Mkdir(usize),
    Rmdir(usize),
    Unlink(usize),
    Rename(usize, usize),
}

const PATHS: [&[u8]; 10] = [
    b"/etc",
    b"/etc/motd",
    b"/etc/new",
    b"/a",
    b"/a/b",
    b"/a/b/c",
    b"/tmp/x",
    b"/tmp/y",
    b"/etc/motd/z",
    b"/q",
];

fn op() -> impl Strategy<Value = Op> {
    let p = 0..PATHS.len();
    prop_oneof![
        p.clone().prop_map(Op::Create),
        (p.clone(), 0usize..20, proptest::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(a, o, d)| Op::Write(a, o, d)),
        (p.clone(), 0usize..20).prop_map(|(a, n)| Op::Trunc(a, n)),
        p.clone().prop_map(Op::Mkdir),
        p.clone().prop_map(Op::Rmdir),
        p.clone().prop_map(Op::Unlink),
        (p.clone(), p).prop_map(|(a, b)| Op::Rename(a, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Random sequences of operations on the overlay agree with a plain
    /// path→contents model, errno for errno, and with what is left.
    #[test]
    fn overlay_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        let a = tar::build(&[(b"etc/motd", b'0', 0o644, b"", b"hello")]);
        let mut f = fs(&a);
        let r = f.root();
        let mut m = Model(Map::new());
        for d in [&b"/"[..], b"/etc", b"/tmp", b"/dev"] {
            m.0.insert(d.to_vec(), M::Dir);
        }
        for n in [&b"/dev/null"[..], b"/dev/zero", b"/dev/tty", b"/dev/console"] {
            m.0.insert(n.to_vec(), M::File(Vec::new())); // never touched by PATHS
        }
        m.0.insert(b"/etc/motd".to_vec(), M::File(b"hello".to_vec()));
        for op in ops {
            let (got, want) = match &op {
                Op::Create(i) => (f.open(r, PATHS[*i], O_CREAT | O_WRONLY, 0o644).map(|_| ()), m.create(PATHS[*i])),
                Op::Write(i, off, d) => (
                    f.open(r, PATHS[*i], O_WRONLY, 0).and_then(|ino| f.write_at(ino, *off as u64, d)).map(|_| ()),
                    m.write(PATHS[*i], *off, d),
                ),
                Op::Trunc(i, n) => (
                    f.open(r, PATHS[*i], O_WRONLY, 0).and_then(|ino| f.truncate(ino, *n as u64)),
                    match m.0.get_mut(PATHS[*i]) {
                        Some(M::File(v)) => { v.resize(*n, 0); Ok(()) }
                        _ => m.write(PATHS[*i], 0, b""),
                    },
                ),
                Op::Mkdir(i) => (f.mkdir(r, PATHS[*i], 0o755).map(|_| ()), m.mkdir(PATHS[*i])),
                Op::Rmdir(i) => (f.rmdir(r, PATHS[*i]), m.rmdir(PATHS[*i])),
                Op::Unlink(i) => (f.unlink(r, PATHS[*i]), m.unlink(PATHS[*i])),
                Op::Rename(i, j) => (f.rename(r, PATHS[*i], r, PATHS[*j]), m.rename(PATHS[*i], PATHS[*j])),
            };
            prop_assert_eq!(got, want, "{:?}", op);
        }
        // The whole tree agrees.
        for (p, e) in &m.0 {
            let ino = f.lookup(r, p, false);
            prop_assert!(ino.is_ok(), "{:?} missing", String::from_utf8_lossy(p));
            let ino = ino.unwrap();
            match e {
                M::Dir => prop_assert!(f.is_dir(ino)),
                M::File(v) if !p.starts_with(b"/dev") => prop_assert_eq!(&read_all(&mut f, ino), v),
                M::File(_) => {}
            }
        }
        for p in PATHS {
            prop_assert_eq!(f.lookup(r, p, false).is_ok(), m.0.contains_key(p));
        }
    }

    /// Without symbolic links, resolution is lexical normalisation.
    #[test]
    fn resolution_is_normalisation(segs in proptest::collection::vec(prop_oneof![
        Just(&b"a"[..]), Just(&b"b"[..]), Just(&b"."[..]), Just(&b".."[..]), Just(&b""[..])], 0..10)) {
        let mut f = Fs::new(MockConsole::default().boxed());
        let r = f.root();
        // A full tree of depth 4 over {a, b}.
        let mut level: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for p in &level {
                for c in [&b"/a"[..], b"/b"] {
                    let q = [p.as_slice(), c].concat();
                    f.mkdir(r, &q, 0o755).unwrap();
                    next.push(q);
                }
            }
            level = next;
        }
        let path = segs.join(&b"/"[..]);
        let cwd = f.lookup(r, b"/a/b", true).unwrap();
        let want = crate::path::normalize(b"/a/b", &path);
        // The deepest point the walk passes through.
        let (mut d, mut deepest) = (2usize, 2usize);
        for c in crate::path::components(&path) {
            match c {
                b"." => {}
                b".." => d = d.saturating_sub(1),
                _ => d += 1,
            }
            deepest = deepest.max(d);
        }
        match f.lookup(cwd, &path, true) {
            Ok(ino) => prop_assert_eq!(f.path_of(ino).unwrap(), want),
            Err(e) => prop_assert!(e == ENOENT && (path.is_empty() || deepest > 4), "{:?}", e),
        }
    }
}
