//! Every single-byte change of a small signed artefact's module, manifest, sidecar and manifest
//! signature is rejected: exhaustively for each position and each one-bit flip plus the full
//! inversion, and by a property test for arbitrary replacement bytes.

use helios_plugin_artefact::{Artefact, VerifyOptions, unpack, verify_artefact};
use proptest::prelude::*;

use crate::support::*;

#[derive(Debug, Clone, Copy)]
enum Part {
    Module,
    Manifest,
    Sidecar,
    ManifestSignature,
}

const PARTS: [Part; 4] = [Part::Module, Part::Manifest, Part::Sidecar, Part::ManifestSignature];

fn bytes_mut(a: &mut Artefact, part: Part) -> &mut Vec<u8> {
    match part {
        Part::Module => &mut a.wasm,
        Part::Manifest => &mut a.manifest,
        Part::Sidecar => a.sidecar.as_mut().unwrap(),
        Part::ManifestSignature => a.manifest_signature.as_mut().unwrap(),
    }
}

fn fixture() -> (Artefact, VerifyOptions) {
    let k = key(11);
    let a = signed_artefact(&k);
    let opts = opts_trusting(&k);
    verify_artefact(&a, "fixture", &opts).expect("the unmodified fixture verifies");
    (a, opts)
}

fn flipped(a: &Artefact, part: Part, pos: usize, mask: u8) -> Artefact {
    let mut b = a.clone();
    bytes_mut(&mut b, part)[pos] ^= mask;
    b
}

#[test]
fn every_bit_flip_and_inversion_at_every_position_is_rejected() {
    let (a, opts) = fixture();
    let mut tried = 0;
    for part in PARTS {
        let len = bytes_mut(&mut a.clone(), part).len();
        for pos in 0..len {
            for mask in [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff] {
                let b = flipped(&a, part, pos, mask);
                assert!(
                    verify_artefact(&b, "flipped", &opts).is_err(),
                    "{part:?} byte {pos} ^ {mask:#04x} was accepted"
                );
                tried += 1;
            }
        }
    }
    eprintln!("{tried} single-byte changes tried, all rejected");
    // Module, manifest, sidecar and signature together are some hundreds of bytes.
    assert!(tried > 9 * 900, "only {tried} flips tried");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_replacement_of_one_byte_is_rejected(part in 0..4usize, pos in any::<prop::sample::Index>(), mask in 1..=255u8) {
        let (a, opts) = FIXTURE.with(|f| f.clone());
        let part = PARTS[part];
        let len = bytes_mut(&mut a.clone(), part).len();
        let b = flipped(&a, part, pos.index(len), mask);
        prop_assert!(verify_artefact(&b, "flipped", &opts).is_err());
    }
}

thread_local! {
    static FIXTURE: (Artefact, VerifyOptions) = fixture();
}

#[test]
fn a_flip_anywhere_in_the_compressed_file_is_rejected_or_changes_nothing() {
    // The gzip header's mtime (4 bytes), XFL and OS bytes do not affect the content, nor do a few
    // deflate bits that decode the same; every other flip must fail (the stream is read to its end,
    // so the CRC and length are checked too).
    let (a, opts) = fixture();
    let packed = tar_gz(&a);
    let limits = helios_plugin_artefact::UnpackLimits::default();
    let mut rejected = 0;
    for pos in 0..packed.len() {
        let mut b = packed.clone();
        b[pos] ^= 0xff;
        match unpack(b.as_slice(), "flipped.tar.gz", &limits)
            .and_then(|u| verify_artefact(&u, "flipped", &opts).map(|_| u))
        {
            Err(_) => rejected += 1,
            Ok(u) => assert_eq!(u, a, "byte {pos} of the .tar.gz changed the content and was accepted"),
        }
    }
    assert!(rejected >= packed.len() - 8, "{rejected} of {} flips rejected", packed.len());
}
