//! Makes cargo rebuild when a migration changes (`embed_migrations!` cannot tell it) and hands
//! the crate a digest of the migrations, which names the test template database.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    println!("cargo:rerun-if-changed={}", dir.display());

    let mut files = Vec::new();
    collect(&dir, &mut files);
    files.sort();
    let mut digest = Sha256::new();
    for file in &files {
        let relative = file.strip_prefix(&dir).unwrap_or(file);
        let contents = fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        // Lengths keep ("ab", "c") and ("a", "bc") apart.
        for part in [relative.to_string_lossy().as_bytes(), &contents] {
            digest.update((part.len() as u64).to_le_bytes());
            digest.update(part);
        }
    }
    let hex: String = digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("cargo:rustc-env=IAM_MIGRATIONS_SHA256={hex}");
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            collect(&path, out);
        } else {
            out.push(path);
        }
    }
}
