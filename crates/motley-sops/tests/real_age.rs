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
