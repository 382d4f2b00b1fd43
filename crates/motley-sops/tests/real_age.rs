//! Files encrypted by the real `age` tool (Debian's `age`), decrypted in memory.

use std::path::Path;
use std::process::Command;

use motley_sops::{Identities, decrypt_age};

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("age (Debian: apt install age)");
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    out.stdout
}

/// A key made by age-keygen: (identity file text, recipient).
fn keygen(dir: &Path, name: &str) -> (String, String) {
    let key = dir.join(name);
    run(Command::new("age-keygen").arg("-o").arg(&key));
    let text = std::fs::read_to_string(&key).expect("key file");
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("age-keygen's public key comment")
        .to_string();
    (text, recipient)
}

fn encrypt(dir: &Path, recipient: &str, plain: &[u8], armor: bool) -> Vec<u8> {
    let input = dir.join("plain");
    std::fs::write(&input, plain).expect("plain");
    let mut cmd = Command::new("age");
    cmd.args(["-r", recipient]);
    if armor {
        cmd.arg("-a");
    }
    let out = run(cmd.arg(&input));
    std::fs::remove_file(&input).expect("rm plain");
    out
}

#[test]
fn files_encrypted_by_age_decrypt_in_memory_and_wrong_or_damaged_ones_say_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, recipient) = keygen(dir.path(), "key.txt");
    let ids = Identities::parse(&key).expect("identity file with its comments");
    let plain = b"kind: Secret\nname: db\ndata: { password: s3cret }\n";

    for armor in [false, true] {
        let file = encrypt(dir.path(), &recipient, plain, armor);
        if armor {
            assert!(file.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----"));
        }
        assert!(
            !file.windows(6).any(|w| w == b"s3cret"),
            "ciphertext shows it"
        );
        let got = decrypt_age(&ids, "db.yaml.age", &file, 1 << 20).expect("decrypts");
        assert_eq!(got.as_slice(), plain);
        // Over the limit: refused, naming the file.
        let e = decrypt_age(&ids, "db.yaml.age", &file, 10).expect_err("limit");
        assert!(
            e.to_string().contains("db.yaml.age") && e.to_string().contains("more than 10 bytes"),
            "{e}"
        );
    }

    // Another key: refused without a plaintext.
    let file = encrypt(dir.path(), &recipient, plain, false);
    let (other, _) = keygen(dir.path(), "other.txt");
    let e = decrypt_age(
        &Identities::parse(&other).expect("other"),
        "db.yaml.age",
        &file,
        1 << 20,
    )
    .expect_err("wrong key");
    assert!(e.to_string().contains("db.yaml.age"), "{e}");

    // Damaged: a flipped byte in the payload fails authentication.
    let mut damaged = file.clone();
    let last = damaged.len() - 5;
    damaged[last] ^= 0x55;
    let e = decrypt_age(&ids, "db.yaml.age", &damaged, 1 << 20).expect_err("damaged");
    assert!(e.to_string().contains("db.yaml.age"), "{e}");

    // Not an age file, and an identity text without a key.
    let e = decrypt_age(&ids, "plain.yaml", plain, 1 << 20).expect_err("not age");
    assert!(e.to_string().contains("plain.yaml: not an age file"), "{e}");
    let e = Identities::parse("# only a comment\n").expect_err("no key");
    assert!(e.to_string().contains("AGE-SECRET-KEY-1"), "{e}");
    // The identity's Debug shows no key.
    assert!(!format!("{ids:?}").contains("AGE-SECRET"), "{ids:?}");
}

/// `tests/fixtures/sops/`: a file made by SOPS (mozilla's Python SOPS 1.18, whose
/// value format Go SOPS 3 keeps) with its data key encrypted to a test age key by
/// `age -a` (`build.sh`; tests/fixtures/SOURCES.md).
fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/sops")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn a_sops_file_with_an_age_recipient_decrypts_with_its_types_and_a_tampered_one_is_refused() {
    let ids = Identities::parse(&fixture("age-key.txt")).expect("test key");
    let enc = fixture("secrets.enc.yaml");
    let plain = motley_sops::decrypt_sops_yaml(&ids, "secrets.enc.yaml", &enc).expect("decrypts");
    // The same document as the plaintext SOPS encrypted, types and order kept.
    let got: serde_json::Value = serde_saphyr::from_str(&plain).expect("YAML out");
    let want: serde_json::Value =
        serde_saphyr::from_str(&fixture("secrets.yaml")).expect("plaintext");
    assert_eq!(got, want);
    assert!(
        plain.starts_with("{\"kind\": \"Secret\", \"name\": \"db\", \"data\": {\"password\""),
        "{}",
        plain.as_str()
    );
    assert!(
        !plain.contains("sops"),
        "metadata stays out: {}",
        plain.as_str()
    );

    // A value swapped for another's (same key, wrong place): its path is its
    // additional data, so it does not open.
    let lines: Vec<&str> = enc.lines().collect();
    let user = lines
        .iter()
        .position(|l| l.trim() == "user:")
        .expect("user")
        + 1;
    let pass = lines
        .iter()
        .position(|l| l.trim() == "password:")
        .expect("password")
        + 1;
    let mut swapped: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    swapped.swap(user, pass);
    let e = motley_sops::decrypt_sops_yaml(&ids, "secrets.enc.yaml", &swapped.join("\n"))
        .expect_err("swapped values");
    assert!(
        e.to_string().contains("data.password") && e.to_string().contains("does not open"),
        "{e}"
    );

    // A value left in the clear changed: the MAC catches it.
    let edited = enc.replace(
        "note_unencrypted: kept as it is",
        "note_unencrypted: changed",
    );
    let e = motley_sops::decrypt_sops_yaml(&ids, "secrets.enc.yaml", &edited).expect_err("mac");
    assert!(e.to_string().contains("MAC does not match"), "{e}");
    // No MAC: refused.
    let start = enc.find("    mac:").expect("mac");
    let no_mac = &enc[..start];
    let e = motley_sops::decrypt_sops_yaml(&ids, "secrets.enc.yaml", no_mac).expect_err("no mac");
    assert!(e.to_string().contains("no mac"), "{e}");

    // Another key: none of the recipients, named.
    let dir = tempfile::tempdir().expect("tempdir");
    let (other, _) = keygen(dir.path(), "other.txt");
    let e = motley_sops::decrypt_sops_yaml(
        &Identities::parse(&other).expect("other"),
        "secrets.enc.yaml",
        &enc,
    )
    .expect_err("another key");
    assert!(
        e.to_string()
            .contains("none of the file's recipients (age1"),
        "{e}"
    );
    // Not SOPS at all.
    let e = motley_sops::decrypt_sops_yaml(&ids, "plain.yaml", &fixture("secrets.yaml"))
        .expect_err("plain");
    assert!(
        e.to_string().contains("plain.yaml: no sops: metadata"),
        "{e}"
    );
}
