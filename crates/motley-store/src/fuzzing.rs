//! The body of the cargo-fuzz target `snapshot` as a library function, so that stable
//! `cargo test` replays every committed corpus file through it and drives it with
//! generated input (`tests/fuzz_corpus.rs`), and the nightly fuzzer runs the same
//! checks. It panics when a property fails.

use sha2::{Digest, Sha256};

use crate::snapshot::Snapshot;

/// `Snapshot::decode` on arbitrary bytes (restore reads files users hand it): no panic;
/// what decodes encodes and decodes to the same. Random bytes rarely carry a valid
/// checksum, so the input is also tried with a correct checksum line appended: the
/// header and entry parsers see it too.
pub fn snapshot(data: &[u8]) {
    check(data);
    let mut sealed = data.to_vec();
    if !sealed.ends_with(b"\n") {
        sealed.push(b'\n');
    }
    let sum = hex::encode(Sha256::digest(&sealed));
    sealed.extend_from_slice(format!("sha256 {sum}\n").as_bytes());
    check(&sealed);
}

fn check(bytes: &[u8]) {
    if let Ok(s) = Snapshot::decode(bytes) {
        let again = s.encode();
        match Snapshot::decode(&again) {
            Ok(back) => assert_eq!(back, s, "a snapshot changed through encode and decode"),
            Err(e) => panic!("an encoded snapshot does not decode: {e}"),
        }
    }
}
