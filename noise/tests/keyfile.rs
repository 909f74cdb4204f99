//! Identity key files: generated with mode 0600, never overwritten, loaded back to the
//! same identity; malformed or group/world-readable files are typed errors.
#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use noise::{Identity, KeyError};

/// A fresh, empty directory for one test, removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("noise-keyfile-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn join(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn write_with_mode(path: &PathBuf, text: &[u8], mode: u32) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_generated_key_file_has_mode_0600_and_loads_back_to_the_same_identity() {
    let dir = TempDir::new("roundtrip");
    let path = dir.join("node.key");
    let identity = Identity::generate_and_save(&path).unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.len(), 65);
    assert!(text.ends_with('\n'));
    assert_eq!(Identity::load(&path).unwrap().peer_id(), identity.peer_id());
    assert_eq!(
        Identity::load_or_generate(&path).unwrap().peer_id(),
        identity.peer_id()
    );
}

#[test]
fn generating_never_overwrites_an_existing_key_file() {
    let dir = TempDir::new("overwrite");
    let path = dir.join("node.key");
    let first = Identity::generate_and_save(&path).unwrap();
    assert!(
        matches!(Identity::generate_and_save(&path), Err(KeyError::AlreadyExists(p)) if p == path)
    );
    assert_eq!(Identity::load(&path).unwrap().peer_id(), first.peer_id());
}

#[test]
fn load_or_generate_creates_a_missing_key_file() {
    let dir = TempDir::new("missing");
    let path = dir.join("node.key");
    let identity = Identity::load_or_generate(&path).unwrap();
    assert_eq!(Identity::load(&path).unwrap().peer_id(), identity.peer_id());
}

#[test]
fn a_group_or_world_readable_key_file_is_refused() {
    let dir = TempDir::new("perms");
    let path = dir.join("node.key");
    let text = format!("{}\n", "11".repeat(32));
    for mode in [0o640, 0o604, 0o660, 0o644] {
        write_with_mode(&path, text.as_bytes(), mode);
        assert!(matches!(
            Identity::load(&path),
            Err(KeyError::InsecurePermissions { mode: m, .. }) if m == mode
        ));
    }
    write_with_mode(&path, text.as_bytes(), 0o400);
    assert!(Identity::load(&path).is_ok());
}

#[test]
fn a_malformed_key_file_is_refused() {
    let dir = TempDir::new("malformed");
    let path = dir.join("node.key");
    let cases: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"1111\n".to_vec(),
        vec![b'1'; 64],                                  // no newline
        format!("{}\n", "zz".repeat(32)).into_bytes(),   // not hex
        format!("{}\n\n", "11".repeat(32)).into_bytes(), // too long
        vec![b'1'; 10_000],
    ];
    for text in &cases {
        write_with_mode(&path, text, 0o600);
        assert!(
            matches!(Identity::load(&path), Err(KeyError::Malformed { .. })),
            "{:?}",
            String::from_utf8_lossy(&text[..text.len().min(80)])
        );
    }
}
